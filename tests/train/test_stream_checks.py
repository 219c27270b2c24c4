"""Streamed data is checked as map-style data is (one checker): damaged shards, undecodable images and labels outside
the classes end in one ``DataError`` naming the shard and row, never a raw traceback; and a Hub parquet repo without a
dataset card streams with the row count its parquet footers state."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybrid_zoo.train.checks import DataError
from hybrid_zoo.train.streaming import StreamBatches, open_stream, samples_per_epoch

pytestmark = pytest.mark.train

_IMAGE = pa.struct([('bytes', pa.binary()), ('path', pa.string())])


def _png(v: int) -> bytes:
    buf = io.BytesIO()
    Image.new('L', (8, 8), v % 256).save(buf, format='PNG')
    return buf.getvalue()


def _write(path: Path, labels: list, images: list[bytes] | None = None) -> None:
    images = images or [_png(i) for i in range(len(labels))]
    table = pa.table(
        {
            'image': pa.array([{'bytes': b, 'path': None} for b in images], type=_IMAGE),
            'label': pa.array(labels, type=pa.int64()),
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _shards(folder: Path, per_shard: list[list]) -> str:
    for i, labels in enumerate(per_shard):
        _write(folder / f'train-{i:05d}-of-{len(per_shard):05d}.parquet', labels)
    return str(folder / 'train-*.parquet')


def _read_all(source: str, num_classes: int = 2) -> int:
    """Open ``source`` streamed and read one epoch of it as the trainer does (no workers); the examples read."""
    stream = open_stream(source, num_classes=num_classes, max_val_samples=2, val_fraction=0.2, seed=0)
    batches = StreamBatches(
        stream,
        lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32)),
        in_chans=1,
        batch_size=2,
        seed=0,
        rank=0,
        num_processes=1,
        accum=1,
        samples=32,  # more than the examples: every shard is read
        workers=0,
        buffer_size=4,
        device=torch.device('cpu'),
    )
    return sum(len(y) for _, y in batches)


# ----------------------------------------------------------------------------------------------------------------------
# Labels: one checker for map-style and streamed data

_bad_label = st.one_of(st.integers(-(2**63), -1), st.integers(2, 2**63 - 1), st.none())  # int64 labels and nulls


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.one_of(st.integers(0, 1), _bad_label), min_size=6, max_size=12))
def test_streamed_labels_are_checked_like_map_style_ones(tmp_path_factory, labels):
    from hybrid_zoo.train import data

    folder = tmp_path_factory.mktemp('labels')
    source = _shards(folder, [[0, 1] * 8, labels[:3], labels[3:]])  # shard 0: clean rows the carve validates on
    bad = [i for i, y in enumerate(labels) if y is None or not 0 <= y < 2]
    if not bad:
        assert _read_all(source) > 0
        return
    with pytest.raises(DataError) as streamed:
        _read_all(source)
    message = str(streamed.value)
    found = re.search(r'row (\d+) of shard (\S+train-(\d+)-of-00003\.parquet) has label (\S+)', message)
    assert found, message
    row, shard = int(found[1]), int(found[3])
    assert shard >= 1 and (shard - 1) * 3 + row in bad  # the row it names is a bad one
    assert ('labels outside [0, 2)' in message) or ('has label None' in message)
    with pytest.raises(DataError, match=r'row \d+ of split .* has label'):  # the map-style path says the same
        data.load_train_val(source, num_classes=2)


def test_a_huge_integer_label_is_refused_before_it_becomes_classes(tmp_path):
    from hybrid_zoo.train import data

    source = _shards(tmp_path, [[0, 1] * 4, [1, 10**12, 0]])
    with pytest.raises(DataError, match=r'largest label .* is 1000000000000, which would make 1000000000001 classes'):
        data.load_train_val(source)  # was: a list of 10**12 class names (out of memory)
    with pytest.raises(DataError, match=r'labels outside \[0, 2\): row 9 of split'):
        data.load_train_val(source, num_classes=2)


def test_an_undecodable_streamed_image_names_its_shard_and_row(tmp_path):
    images = [_png(i) for i in range(4)]
    images[2] = b'this is not an image'
    _write(tmp_path / 'train-00000-of-00002.parquet', [0, 1] * 8)  # clean rows the carve validates on
    _write(tmp_path / 'train-00001-of-00002.parquet', [0, 1, 0, 1], images)
    with pytest.raises(DataError) as e:
        _read_all(str(tmp_path / 'train-*.parquet'))
    assert re.search(
        r'cannot read or transform the image in row 2 of shard \S+train-00001-of-00002\.parquet: UnidentifiedImageError',
        str(e.value),
    ), str(e.value)


# ----------------------------------------------------------------------------------------------------------------------
# Damaged shards


def _truncate(path: Path, fraction: float) -> None:
    """Cut a shard inside its data (a tar's zero padding and a cut on a 512-byte block boundary read as its end)."""
    import tarfile

    raw = path.read_bytes()
    end = len(raw)
    if path.suffix == '.tar':
        with tarfile.open(path) as tar:
            end = max(m.offset_data + m.size for m in tar.getmembers())
    path.write_bytes(raw[: int(end * fraction) | 1])


def _other_schema(path: Path) -> None:
    pq.write_table(pa.table({'img': pa.array([b'x'] * 3), 'target': pa.array([0, 1, 0])}), path)


def _no_rows(path: Path) -> None:
    _write(path, [])


_damage = st.one_of(
    st.just(('zero bytes', lambda p: p.write_bytes(b''))),
    st.binary(min_size=1, max_size=200).map(lambda b: ('random bytes', lambda p: p.write_bytes(b))),
    st.floats(0.05, 0.95).map(lambda f: ('truncated', lambda p: _truncate(p, f))),
    st.just(('another schema', _other_schema)),
    st.just(('0 rows', _no_rows)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=_damage, which=st.integers(0, 2), fmt=st.sampled_from(['parquet', 'webdataset']))
def test_a_damaged_shard_is_one_error_naming_it(tmp_path_factory, damage, which, fmt):
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    from hybrid_zoo.train.shards import write_shards

    name, apply = damage
    if fmt == 'webdataset' and name in ('another schema', '0 rows'):
        name, apply = 'zero bytes', (lambda p: p.write_bytes(b''))
    features = Features({'image': HFImage(), 'label': ClassLabel(names=['a', 'b'])})
    ds = Dataset.from_dict(
        {'image': [{'bytes': _png(i), 'path': None} for i in range(12)], 'label': [0, 1] * 6}, features=features
    )
    folder = write_shards(DatasetDict({'train': ds}), tmp_path_factory.mktemp('shards') / 'set', fmt, 4)
    shard = sorted((folder / 'data').glob('train-*'))[which]
    apply(shard)
    with pytest.raises(DataError) as e:
        _read_all(str(folder))
    assert shard.name in str(e.value), f'{name}: {e.value}'


def test_damaged_shard_classes_say_what_is_wrong(tmp_path):
    cases = {
        'zero bytes': (lambda p: p.write_bytes(b''), 'is not a readable parquet file'),
        'truncated': (lambda p: p.write_bytes(p.read_bytes()[:-20]), 'is not a readable parquet file'),
        'another schema': (_other_schema, "has columns {'img': 'binary', 'target': 'int64'}"),
        '0 rows': (_no_rows, 'holds 0 rows'),
    }
    for name, (apply, expected) in cases.items():
        source = _shards(tmp_path / name.replace(' ', '_'), [[0, 1, 0], [1, 0, 1]])
        apply(Path(source).parent / 'train-00001-of-00002.parquet')
        with pytest.raises(DataError, match=re.escape(expected)):
            _read_all(source)


# ----------------------------------------------------------------------------------------------------------------------
# The size of a streamed split from its parquet footers


@pytest.mark.hub
def test_a_hub_parquet_repo_without_a_card_streams_with_the_footers_row_count(tmp_path, hf_token, monkeypatch):
    from huggingface_hub import HfApi

    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))
    counts = [5, 7, 4]
    for i, n in enumerate(counts):
        _write(tmp_path / 'repo' / 'data' / f'train-{i:05d}-of-00003.parquet', [j % 2 for j in range(n)])
    api = HfApi()
    api.create_repo('alice/no-card', repo_type='dataset', exist_ok=True)
    api.upload_folder(folder_path=str(tmp_path / 'repo'), repo_id='alice/no-card', repo_type='dataset')
    assert 'README.md' not in api.list_repo_files('alice/no-card', repo_type='dataset')

    stream = open_stream('alice/no-card', num_classes=2, max_val_samples=2, val_fraction=0.5, seed=0)
    assert stream.train_examples == sum(counts)
    assert samples_per_epoch(stream, None, 0.5) == sum(counts) // 2  # no --samples-per-epoch needed
