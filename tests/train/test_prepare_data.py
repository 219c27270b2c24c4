"""``hybrid-zoo prepare-data``: what it may replace (only files it wrote), what a push leaves in a dataset repo (only
the shards it wrote last), and how it fails (one line, exit 2, before any work). Tiny save_to_disk sources; the
bundled Hub server for pushes."""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybrid_zoo.train.checks import DataError
from hybrid_zoo.train.data import prepare_data
from hybrid_zoo.train.shards import MANIFEST, shard_counts, write_shards
from hybrid_zoo_cli.data import main as prepare_data_cli

pytestmark = pytest.mark.train


def _tiny(n: int, path: Path) -> Path:
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    def png(v: int) -> dict:
        buf = io.BytesIO()
        Image.new('L', (8, 8), v).save(buf, format='PNG')
        return {'bytes': buf.getvalue(), 'path': None}

    features = Features({'image': HFImage(), 'label': ClassLabel(names=['a', 'b'])})
    ds = Dataset.from_dict({'image': [png(i) for i in range(n)], 'label': [i % 2 for i in range(n)]}, features=features)
    DatasetDict({'train': ds}).save_to_disk(str(path))
    return path


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """Two different datasets with the same folder name ``tiny`` (the shard folder is named after it)."""
    root = tmp_path_factory.mktemp('sources')
    return _tiny(20, (root / 'a').joinpath('tiny')), _tiny(12, (root / 'b').joinpath('tiny'))


def _shard(out: Path, source: Path, *extra: str) -> int:
    return prepare_data_cli(
        ['--out-dir', str(out), '--shards', 'parquet', '--shard-size', '8', '--source', str(source), *extra]
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


# ----------------------------------------------------------------------------------------------------------------------
# Nothing deletes a file it did not create

_user_files = st.dictionaries(
    st.sampled_from(['README.md', 'notes.txt', 'data/train-00000-of-00001.parquet', 'data/mine/keep.bin', MANIFEST]),
    st.binary(max_size=32),
    min_size=1,
    max_size=3,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=_user_files)
def test_the_shard_writer_never_replaces_a_folder_holding_files_it_did_not_write(sources, tmp_path, files):
    from datasets import load_from_disk

    folder = tmp_path / f'probe-{abs(hash(tuple(sorted(files.items()))))}'
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    before = _snapshot(folder)
    with pytest.raises(DataError, match='would delete them'):
        write_shards(load_from_disk(str(sources[0])), folder, 'parquet', 8, source='a')
    assert _snapshot(folder) == before


def test_a_shard_folder_is_replaced_only_with_its_own_files_and_source(sources, tmp_path, caplog):
    a, b = sources
    out = tmp_path / 'out'
    assert _shard(out, a) == 0 and _shard(out, a) == 0  # the same source again: its own shards are rewritten
    folder = out / 'tiny-parquet'
    first = _snapshot(folder)
    assert sorted(f for f in first if f.startswith('data/')) == [
        f'data/train-0000{i}-of-00003.parquet' for i in range(3)
    ]

    caplog.clear()
    assert _shard(out, b) == 2  # another source with the same folder name
    assert f"holds the shards of '{a}'" in caplog.text and '--overwrite' in caplog.text
    assert _snapshot(folder) == first

    (folder / 'data' / 'mine.txt').write_text('my notes\n')
    with_mine = _snapshot(folder)
    for extra in ([], ['--overwrite']):
        caplog.clear()
        assert _shard(out, b, *extra) == 2 and "['data/mine.txt']" in caplog.text
        assert _snapshot(folder) == with_mine
    (folder / 'data' / 'mine.txt').unlink()

    shard = folder / 'data' / 'train-00001-of-00003.parquet'
    shard.write_bytes(shard.read_bytes()[:-1] + b'!')  # edited by hand since
    caplog.clear()
    assert _shard(out, a) == 2 and 'train-00001-of-00003.parquet' in caplog.text and 'changed since' in caplog.text
    shard.write_bytes(first['data/train-00001-of-00003.parquet'])

    assert _shard(out, b, '--overwrite') == 0  # asked by name: b's shards replace a's
    assert shard_counts(folder) == {'train': 12} and 'mine.txt' not in _snapshot(folder)


def test_a_prepared_dataset_folder_with_user_files_is_not_replaced(tmp_path, caplog):
    out = tmp_path / 'data'
    (out / 'digits').mkdir(parents=True)
    (out / 'digits' / 'my_digits.csv').write_text('1,2,3\n')
    assert prepare_data_cli(['--which', 'digits', '--out-dir', str(out)]) == 2
    assert "['my_digits.csv']" in caplog.text and (out / 'digits' / 'my_digits.csv').read_text() == '1,2,3\n'
    assert not (out / 'digits' / 'dataset_dict.json').exists()


def test_out_dir_naming_a_file_is_a_usage_error(tmp_path, capsys, sources):
    target = tmp_path / 'a-file'
    target.write_text('mine\n')
    for argv in (['--which', 'digits'], ['--shards', 'parquet', '--source', str(sources[0])]):
        assert prepare_data_cli([*argv, '--out-dir', str(target)]) == 2
        assert 'is a file; expected a folder' in capsys.readouterr().err and target.read_text() == 'mine\n'
    with pytest.raises(DataError, match='is a file; expected a folder'):  # the library checks it too
        prepare_data('digits', target)


# ----------------------------------------------------------------------------------------------------------------------
# Pushes: one commit that replaces the dataset's shards; failures in one line before any work


def _repo_files(repo_id: str) -> list[str]:
    from huggingface_hub import HfApi

    return sorted(s.rfilename for s in HfApi().dataset_info(repo_id).siblings)


@pytest.mark.hub
def test_a_second_push_with_another_shard_size_replaces_the_shards(sources, tmp_path, hf_token, monkeypatch):
    from datasets import load_dataset

    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))
    a, _ = sources
    repo = 'alice/tiny-resharded'
    for size, count in ((8, 3), (5, 4)):
        out = tmp_path / f'size{size}'
        assert _shard(out, a, '--shard-size', str(size), '--push-to', repo) == 0
        data_files = [f for f in _repo_files(repo) if f.startswith('data/')]
        assert data_files == [f'data/train-{i:05d}-of-{count:05d}.parquet' for i in range(count)]
        assert MANIFEST not in _repo_files(repo)
    monkeypatch.setenv('HF_DATASETS_CACHE', str(tmp_path / 'ds-cache'))
    assert sum(1 for _ in load_dataset(repo, split='train', streaming=True)) == 20  # the card says 20, so does the data


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.hub
@pytest.mark.parametrize(
    'user, repo, expected',
    [
        ('bob', 'alice/tiny', "cannot write to namespace 'alice'"),  # 403: another user's namespace
        ('carol', 'carol/tiny', 'read-only'),
        ('alice', 'alice/not a name!', 'is not a dataset repo id'),
        ('alice', 'alice/', 'is not a dataset repo id'),
        ('alice', 'tiny', 'needs a namespace'),
        (None, 'alice/tiny', 'No Hugging Face token found'),
        ('alice', 'unreachable', 'failed while checking the token'),
    ],
)
def test_push_failures_are_one_line_exit_2_before_any_work(
    sources, tmp_path, monkeypatch, caplog, capsys, hub_server, hub_tokens, user, repo, expected
):
    from huggingface_hub import constants

    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))  # no stored login
    if user:
        monkeypatch.setenv('HF_TOKEN', hub_tokens[user])
    if repo == 'unreachable':
        monkeypatch.setattr(constants, 'ENDPOINT', f'http://127.0.0.1:{_closed_port()}')
        repo = 'alice/tiny'
    out = tmp_path / 'out'
    with caplog.at_level(logging.ERROR):
        assert _shard(out, sources[0], '--push-to', repo) == 2
    assert expected in caplog.text, caplog.text
    assert 'Traceback' not in caplog.text + capsys.readouterr().err
    assert not (out / 'tiny-parquet').exists()  # refused before any shard was written


def _tiny_fashion_mnist(folder: Path) -> Path:
    """The four Fashion-MNIST IDX files, with 6 train and 4 test images."""
    import gzip
    import struct

    folder.mkdir(parents=True)
    for prefix, n in (('train', 6), ('t10k', 4)):
        images = struct.pack('>HBB3I', 0, 8, 3, n, 28, 28) + bytes(i * 7 % 256 for i in range(n * 28 * 28))
        labels = struct.pack('>HBBI', 0, 8, 1, n) + bytes(i % 10 for i in range(n))
        (folder / f'{prefix}-images-idx3-ubyte.gz').write_bytes(gzip.compress(images))
        (folder / f'{prefix}-labels-idx1-ubyte.gz').write_bytes(gzip.compress(labels))
    return folder


@pytest.mark.hub
def test_two_datasets_are_never_pushed_to_one_repo(tmp_path, hf_token, monkeypatch, caplog):
    """Each push replaces the repo's shards, so ``--which all`` (Fashion-MNIST and digits) with ``--push-to`` would
    leave only the second: refused before anything is prepared or pushed; one dataset per repo still pushes."""
    from huggingface_hub import HfApi

    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))
    idx = _tiny_fashion_mnist(tmp_path / 'idx')
    argv = ['--fashion-mnist-dir', str(idx), '--shards', 'parquet', '--out-dir', str(tmp_path / 'out')]
    with caplog.at_level(logging.ERROR):
        assert prepare_data_cli(['--which', 'all', *argv, '--push-to', 'alice/both']) == 2
    assert '--push-to alice/both takes one dataset' in caplog.text and 'fashion_mnist and digits' in caplog.text
    assert not (tmp_path / 'out').exists() and not HfApi().repo_exists('alice/both', repo_type='dataset')

    assert prepare_data_cli(['--which', 'fashion-mnist', *argv, '--push-to', 'alice/fashion-only']) == 0
    data_files = [f for f in _repo_files('alice/fashion-only') if f.startswith('data/')]
    assert data_files == ['data/test-00000-of-00001.parquet', 'data/train-00000-of-00001.parquet']
