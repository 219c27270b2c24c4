"""Where data comes from: the validation source, path typos and Hub ids, parquet layouts, prepare-data, the
``--data-dir`` refusal and the torch-free command-line parsers. Tiny synthetic data; seconds in all."""

from __future__ import annotations

import gzip
import io
import logging
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybrid_zoo.train import data, embedded
from hybrid_zoo.train.data import DataError
from hybrid_zoo_cli import data as data_cli
from hybrid_zoo_cli import evaluate as eval_cli
from hybrid_zoo_cli import train as train_cli

pytestmark = pytest.mark.train

ROOT = Path(__file__).resolve().parents[2]


def _dataset(n: int, offset: int = 0):
    """``n`` 8x8 grayscale images, labels ``i % 3``, each image's first pixel its global index ``offset + i``."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    images = []
    for i in range(n):
        pixels = np.full((8, 8), 200, dtype=np.uint8)
        pixels[0, 0] = offset + i
        images.append(pixels)
    features = Features({'image': HFImage(), 'label': ClassLabel(names=['a', 'b', 'c'])})
    return Dataset.from_dict({'image': images, 'label': [i % 3 for i in range(n)]}, features=features)


def _first_pixels(split: data.Split) -> set[int]:
    return {int(np.asarray(split.dataset[int(r)]['image'])[0, 0]) for r in split.rows}


def _png(value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new('L', (8, 8), value).save(buf, format='PNG')
    return buf.getvalue()


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob('*'))}


# ----------------------------------------------------------------------------------------------------------------------
# 1. the validation split is never the test split unless asked


def test_validation_is_carved_from_train_not_taken_from_test(tmp_path, caplog):
    from datasets import DatasetDict

    DatasetDict({'train': _dataset(60), 'test': _dataset(30, offset=100)}).save_to_disk(str(tmp_path / 'ds'))
    before = _files(tmp_path / 'ds')
    with caplog.at_level(logging.INFO, logger='hybrid_zoo.train.data'):
        train, val, spec = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.1, seed=42)
    assert (spec.num_train, spec.num_val) == (54, 6) and val.name == train.name == 'train'
    assert spec.val_source == 'validation carved from train, 10%, stratified, seed 42'
    assert '54 train / 6 val rows (validation carved from train, 10%, stratified, seed 42)' in caplog.text
    assert np.bincount(val.labels()).tolist() == [2, 2, 2]
    assert max(_first_pixels(val) | _first_pixels(train)) < 60  # not one test image
    assert not set(train.rows) & set(val.rows)
    again = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.1, seed=42)[1]
    other = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.1, seed=7)[1]
    assert np.array_equal(again.rows, val.rows) and not np.array_equal(other.rows, val.rows)
    assert _files(tmp_path / 'ds') == before  # no index cache or anything else written beside the data

    caplog.clear()
    with caplog.at_level(logging.INFO, logger='hybrid_zoo.train.data'):
        _, val, spec = data.load_train_val(str(tmp_path / 'ds'), val_split='test')
    assert spec.num_val == 30 and min(_first_pixels(val)) >= 100
    warning = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning and 'no held-out test score' in warning[0].getMessage()
    assert 'as asked' in spec.val_source and spec.identity()['val_source'] == spec.val_source


def test_validation_split_by_name_and_unstratifiable_carve(tmp_path, caplog):
    from datasets import ClassLabel, DatasetDict

    dd = DatasetDict({'train': _dataset(30), 'valid': _dataset(9, offset=50), 'test': _dataset(9, offset=100)})
    dd.save_to_disk(str(tmp_path / 'named'))
    _, val, spec = data.load_train_val(str(tmp_path / 'named'))
    assert spec.val_split == 'valid' and spec.val_source == "split 'valid'" and min(_first_pixels(val)) == 50

    # one row of class 'c': no stratified split exists, so the share is drawn at random and the log says so
    lonely = _dataset(10).cast_column('label', ClassLabel(names=['a', 'b', 'c', 'd']))
    lonely = lonely.map(lambda ex, i: {'label': 3 if i == 0 else ex['label'] % 2}, with_indices=True)
    DatasetDict({'train': lonely}).save_to_disk(str(tmp_path / 'lonely'))
    with caplog.at_level(logging.INFO, logger='hybrid_zoo.train.data'):
        train, val, spec = data.load_train_val(str(tmp_path / 'lonely'), val_fraction=0.3, seed=0)
    assert spec.val_source == 'validation carved from train, 30%, not stratified, seed 0'
    assert (len(train), len(val)) == (7, 3) and 'not stratified' in caplog.text


# ----------------------------------------------------------------------------------------------------------------------
# 2. --data-dir is refused; nothing is written into a data folder


@pytest.mark.parametrize('command', ['train', 'evaluate', 'demo'])
def test_data_dir_is_refused_before_anything_runs(command, tmp_path, capsys):
    import importlib

    parser = importlib.import_module(f'hybrid_zoo_cli.{command}').build_parser()
    mine = tmp_path / 'my_images'
    mine.mkdir()
    argv = ['--data-dir', str(mine)] + (['--model', 'x'] if command == 'evaluate' else [])
    with pytest.raises(SystemExit) as e:
        parser.parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert '--dataset FOLDER' in err and '--embedded-cache FOLDER' in err
    assert not list(mine.iterdir())
    assert parser.parse_args(['--embedded-cache', str(tmp_path / 'c')] + argv[2:]).embedded_cache == str(tmp_path / 'c')


def test_train_cli_data_dir_writes_nothing(tmp_path, monkeypatch):

    monkeypatch.setattr(embedded, 'fashion_mnist_available', lambda *a: False)  # were the flag taken: digits, quickly
    mine = tmp_path / 'my_images'
    mine.mkdir()
    argv = ['--model', 'test_convnext', '--img-size', '32', '--in-chans', '1', '--epochs', '1', '--workers', '0']
    argv += ['--max-train-samples', '32', '--batch-size', '16', '--output-dir', str(tmp_path / 'run')]
    with pytest.raises(SystemExit) as e:
        train_cli.main(['--data-dir', str(mine)] + argv)
    assert e.value.code == 2 and not list(mine.iterdir()) and not (tmp_path / 'run').exists()


# ----------------------------------------------------------------------------------------------------------------------
# 3. a mistyped path fails at once; a Hub id that does not exist fails in one line


def test_missing_paths_fail_at_once(tmp_path):
    for source in (
        './no_such_folder',
        str(tmp_path / 'missing'),
        '~/no_such_folder_hz',
        'data/no_such_dataset_hz/train',  # not data/fashion_mnist: the embedded cache may hold it
        'train.parquet',
        str(tmp_path / '*.parquet'),
    ):
        started = time.perf_counter()
        with pytest.raises(DataError, match=r'^no such folder/file: '):
            data.open_dataset(source)
        assert time.perf_counter() - started < 2, source
    assert not data.looks_like_path('org/name') and not data.looks_like_path('mnist')


def test_missing_path_cli_exit_code_2(tmp_path, caplog, capsys):

    typo = str(tmp_path / 'imgs_typo')
    assert (
        train_cli.main(['--dataset', typo, '--model', 'test_convnext', '--workers', '0', '--output-dir', str(tmp_path)])
        == 2
    )
    assert eval_cli.main(['--model', 'test_convnext', '--dataset', typo, '--workers', '0']) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    hint = 'expected an existing save_to_disk folder, imagefolder directory or parquet file(s); a Hub id is written'
    assert errors == [f'no such folder/file: {typo} ({hint} org/name)'] * 2
    assert 'Traceback' not in capsys.readouterr().err


@pytest.mark.hub
def test_unknown_hub_dataset_fails_in_one_line(hub_server):
    started = time.perf_counter()
    with pytest.raises(DataError, match=r"^no such dataset: 'zoo/no-such-dataset' is not a local folder or file"):
        data.open_dataset('zoo/no-such-dataset')
    assert time.perf_counter() - started < 5


def test_unreachable_hub_fails_in_one_line(monkeypatch):
    import huggingface_hub.constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        closed = f'http://127.0.0.1:{s.getsockname()[1]}'
    monkeypatch.setattr(huggingface_hub.constants, 'ENDPOINT', closed)
    started = time.perf_counter()
    with pytest.raises(DataError, match=r'cannot be reached .*HF_HUB_OFFLINE=1') as e:
        data.open_dataset('org/no-such-dataset')
    assert time.perf_counter() - started < 5 and '\n' not in str(e.value)


# ----------------------------------------------------------------------------------------------------------------------
# 4. and 5. parquet: pyarrow image structs, and globs split by file name


def test_pyarrow_image_structs_are_images(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {'image': [{'bytes': _png(i), 'path': None} for i in range(12)], 'label': [i % 2 for i in range(12)]}
    pq.write_table(pa.Table.from_pydict(rows), tmp_path / 'structs.parquet')
    train, val, spec = data.load_train_val(str(tmp_path / 'structs.parquet'), val_fraction=0.25)
    assert spec.image_column == 'image' and (len(train), len(val)) == (9, 3)
    torch_ds = data.ImageClassificationDataset(train, lambda im: torch.tensor(np.asarray(im)), in_chans=1)
    x, y = next(iter(torch.utils.data.DataLoader(torch_ds, batch_size=4)))
    assert x.shape == (4, 8, 8) and y.tolist() == [int(torch_ds.split.labels()[i]) for i in range(4)]

    pq.write_table(pa.Table.from_pydict({'image': [1.0, 2.0], 'label': [0, 1]}), tmp_path / 'numbers.parquet')
    with pytest.raises(DataError, match=r"image column 'image' of split 'train' has type .*float.*; expected an Image"):
        data.load_train_val(str(tmp_path / 'numbers.parquet'))


def test_parquet_glob_keeps_train_and_test_apart(tmp_path):
    folder = tmp_path / 'data'
    folder.mkdir()
    _dataset(20).to_parquet(str(folder / 'train-0.parquet'))
    _dataset(10, offset=100).to_parquet(str(folder / 'test-0.parquet'))
    dd, _ = data.open_dataset(str(folder / '*.parquet'))
    assert {k: len(v) for k, v in dd.items()} == {'train': 20, 'test': 10}
    train, val, spec = data.load_train_val(str(folder / '*.parquet'), val_fraction=0.25)
    assert spec.num_train + spec.num_val == 20 and max(_first_pixels(train) | _first_pixels(val)) < 20

    _dataset(5, offset=50).to_parquet(str(folder / 'extra.parquet'))  # no split in its name
    listing = (
        r"by name they are train: \['train-0.parquet'\]; test: \['test-0.parquet'\]; no split for \['extra.parquet'\]"
    )
    with pytest.raises(DataError, match=listing):
        data.open_dataset(str(folder / '*.parquet'))


# ----------------------------------------------------------------------------------------------------------------------
# 6. prepare-data writes both embedded datasets


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack('>HBB', 0, 0x08, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_prepare_data_writes_fashion_mnist_and_digits(tmp_path, capsys):
    from datasets import ClassLabel, load_from_disk
    from datasets import Image as HFImage

    from hybrid_zoo.labels import DIGITS_CLASSES, FASHION_MNIST_CLASSES

    idx = tmp_path / 'idx'  # a miniature of the Debian package's four IDX files
    idx.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (('train', 20), ('t10k', 10)):
        _write_idx(idx / f'{prefix}-images-idx3-ubyte.gz', rng.integers(0, 255, (n, 28, 28)))
        _write_idx(idx / f'{prefix}-labels-idx1-ubyte.gz', np.arange(n) % 10)
    out = tmp_path / 'data'
    assert data_cli.main(['--out', str(out), '--fashion-mnist-dir', str(idx)]) == 0  # as the README writes it
    assert capsys.readouterr().out.split() == [str(out / 'fashion_mnist'), str(out / 'digits')]
    expected = {
        'fashion_mnist': (list(FASHION_MNIST_CLASSES), 20, 10),
        'digits': (list(DIGITS_CLASSES), 1437, 360),
    }
    for name, (names, n_train, n_test) in expected.items():
        dd = load_from_disk(str(out / name))
        assert {k: len(v) for k, v in dd.items()} == {'train': n_train, 'test': n_test}, name
        for split in dd.values():
            assert isinstance(split.features['image'], HFImage)
            assert split.features['label'] == ClassLabel(names=names)
    assert data.load_train_val(str(out / 'digits'))[2].label_names == list(DIGITS_CLASSES)


def test_train_config_has_one_home():
    import hybrid_zoo.train as train
    import hybrid_zoo_config.train as light
    from hybrid_zoo.train import checkpoints, loop

    assert train.TrainConfig is loop.TrainConfig is checkpoints.TrainConfig is light.TrainConfig
    assert loop.RESUME_MUST_MATCH is checkpoints.RESUME_MUST_MATCH is light.RESUME_MUST_MATCH
    assert train.TrainConfigError is loop.TrainConfigError is light.TrainConfigError
