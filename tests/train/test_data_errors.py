"""Data under bad input: validation classes listed in another order, empty splits and missing or mixed labels, deep
and odd image modes, a corrupt image read by DataLoader workers. Tiny synthetic data; no training."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from hybrid_zoo.train import data
from hybrid_zoo.train.data import DataError

pytestmark = pytest.mark.train


def _png(value: int) -> dict:
    buf = io.BytesIO()
    Image.new('L', (8, 8), value).save(buf, format='PNG')
    return {'bytes': buf.getvalue(), 'path': None}


def _split(labels: list, label_feature, values: list[int] | None = None):
    """One image per label; the image's pixel value says which class it shows (``values``, default the label)."""
    from datasets import Dataset, Features
    from datasets import Image as HFImage

    values = values if values is not None else [int(v or 0) for v in labels]
    features = Features({'image': HFImage(), 'label': label_feature})
    return Dataset.from_dict({'image': [_png(v) for v in values], 'label': labels}, features=features)


def _save(tmp_path, name: str, **splits):
    from datasets import DatasetDict

    DatasetDict(splits).save_to_disk(str(tmp_path / name))
    return str(tmp_path / name)


# ----------------------------------------------------------------------------------------------------------------------
# M9: the validation split names its classes in another order


def test_validation_classes_in_another_order_are_read_by_name(tmp_path, caplog):
    from datasets import ClassLabel

    shows = [i % 2 for i in range(12)]  # 0: a cat, 1: a dog (the pixel value says which)
    train = _split(shows, ClassLabel(names=['cat', 'dog']))
    val = _split([1 - c for c in shows], ClassLabel(names=['dog', 'cat']), values=shows)  # the same animals
    path = _save(tmp_path, 'swapped', train=train, validation=val)

    with caplog.at_level(logging.WARNING, logger='hybrid_zoo.train.data'):
        tr, va, spec = data.load_train_val(path)
    assert spec.label_names == ['cat', 'dog'] and spec.val_source == "split 'validation'"
    assert 'remapped to the training order' in caplog.text
    assert va.labels().tolist() == shows == tr.labels().tolist()
    torch_val = data.ImageClassificationDataset(va, lambda im: np.asarray(im)[0, 0], in_chans=1, source='swapped')
    assert [int(y) for _, y in torch_val.__getitems__(list(range(12)))] == shows
    assert [torch_val[i][1] for i in range(12)] == shows

    other = _split([0, 1] * 3, ClassLabel(names=['cat', 'owl']))
    with pytest.raises(DataError, match=r"\['owl'\] cannot be matched to a training class"):
        data.load_train_val(_save(tmp_path, 'other', train=train, validation=other))


# ----------------------------------------------------------------------------------------------------------------------
# L3: empty splits, labels that are None, label types that differ between splits


def test_empty_splits_are_data_errors(tmp_path):
    from datasets import ClassLabel

    train = _split([0, 1] * 4, ClassLabel(names=['a', 'b']))
    with pytest.raises(DataError, match=r"empty split\(s\) \['validation'\]"):
        data.load_train_val(_save(tmp_path, 'saved', train=train, validation=train.select([])))
    (tmp_path / 'pq').mkdir()
    train.to_parquet(str(tmp_path / 'pq' / 'train-0.parquet'))
    train.select([]).to_parquet(str(tmp_path / 'pq' / 'validation-0.parquet'))
    with pytest.raises(DataError, match=r'cannot load dataset .*an empty split\?|empty'):
        data.load_train_val(str(tmp_path / 'pq'))
    with pytest.raises(DataError, match=r"split 'validation' of .* is empty \(0 rows\)"):
        _empty_in_memory(train)


def _empty_in_memory(train):
    """A split that loads but has no rows (e.g. a filter that removed everything)."""
    from unittest import mock

    from datasets import DatasetDict

    dd = DatasetDict({'train': train, 'validation': train.select([])})
    with mock.patch.object(data, 'open_dataset', lambda *a, **k: (dd, 'filtered')):
        data.load_train_val('filtered')


@pytest.mark.parametrize('feature', ['string', 'int64', 'classlabel'])
def test_a_label_that_is_none_names_its_row(tmp_path, feature):
    from datasets import ClassLabel, Value

    labels = [['a', 'b'][i % 2] if feature == 'string' else i % 2 for i in range(8)]
    labels[5] = None
    kind = {'string': Value('string'), 'int64': Value('int64'), 'classlabel': ClassLabel(names=['a', 'b'])}[feature]
    path = _save(tmp_path, feature, train=_split(labels, kind, values=[0] * 8))
    with pytest.raises(DataError, match=r"row 5 of split 'train' has label None") as e:
        data.load_train_val(path, val_fraction=0.25)
    assert '-9223372036854775808' not in str(e.value)


@pytest.mark.parametrize('order', ['classlabel-then-string', 'string-then-classlabel'])
def test_label_types_that_differ_between_splits(tmp_path, order):
    from datasets import ClassLabel, Value

    named = _split([0, 1] * 4, ClassLabel(names=['a', 'b']))
    strings = _split(['a', 'b'] * 4, Value('string'), values=[0] * 8)
    train, val = (named, strings) if order.startswith('classlabel') else (strings, named)
    with pytest.raises(DataError, match=r'has different types across splits'):
        data.load_train_val(_save(tmp_path, order, train=train, validation=val))


# ----------------------------------------------------------------------------------------------------------------------
# L5: image modes


def test_deep_float_and_lab_images():
    f = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    assert np.asarray(data.to_model_mode(Image.fromarray(f), 1)).max() == 255  # a clean float image is stretched
    f[3, 3] = np.nan
    with pytest.raises(DataError, match=r'1 of 256 pixels of this F image are NaN or infinite'):
        data.to_model_mode(Image.fromarray(f), 1)
    f[3, 3] = np.inf
    with pytest.raises(DataError, match='NaN or infinite'):
        data.to_model_mode(Image.fromarray(f), 3)

    raw = np.array([0, 1000, 2000, 4000], dtype='<u2').tobytes()
    for mode in ('I;16L', 'I;16', 'I;16B'):
        order = '>u2' if mode == 'I;16B' else '<u2'
        image = Image.frombytes(mode, (2, 2), np.frombuffer(raw, '<u2').astype(order).tobytes())
        assert np.asarray(data.to_model_mode(image, 1)).tolist() == [[0, 64], [128, 255]], mode  # scaled, not clipped

    lab = Image.new('LAB', (4, 4), (128, 200, 128))
    gray = data.to_model_mode(lab, 1)
    assert gray.mode == 'L' and gray.getpixel((0, 0)) == lab.convert('RGB').convert('L').getpixel((0, 0))
    assert data.to_model_mode(lab, 3).mode == 'RGB'


def test_nan_image_in_a_dataset_names_the_row():
    from datasets import Dataset, Features
    from datasets import Image as HFImage

    f = np.zeros((8, 8), dtype=np.float32)
    images = [Image.fromarray(f + i) for i in range(4)]
    bad = f.copy()
    bad[0, 0] = np.nan
    images[2] = Image.fromarray(bad)
    buffers = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format='TIFF')
        buffers.append({'bytes': buf.getvalue(), 'path': None})
    ds = Dataset.from_dict(
        {'image': buffers, 'label': [0] * 4}, features=Features({'image': HFImage(), 'label': _cl()})
    )
    split = data.Split(ds, np.arange(4), 'train', 'image', 'label')
    torch_ds = data.ImageClassificationDataset(split, lambda im: torch.zeros(1), in_chans=1, source='floats')
    assert torch_ds[1][1] == 0
    with pytest.raises(DataError, match=r"row 2 of split 'train' of floats: DataError: 1 of 64 pixels"):
        torch_ds[2]
    with pytest.raises(DataError) as e:  # through a worker: the same one line, not the worker's traceback
        list(torch.utils.data.DataLoader(torch_ds, batch_size=4, num_workers=1))
    assert str(e.value).startswith("cannot read or transform the image in row 2 of split 'train' of floats: DataError")


def _cl():
    from datasets import ClassLabel

    return ClassLabel(names=['x'])


# ----------------------------------------------------------------------------------------------------------------------
# L18: a corrupt image read by DataLoader workers


def test_corrupt_image_in_workers_is_one_line_naming_row_and_file(tmp_path):
    for cls in ('a', 'b'):
        (tmp_path / 'imgs' / 'train' / cls).mkdir(parents=True)
        for i in range(4):
            Image.new('L', (8, 8), 40 * i).save(tmp_path / 'imgs' / 'train' / cls / f'{i}.png')
    broken = tmp_path / 'imgs' / 'train' / 'b' / '2.png'
    broken.write_bytes(broken.read_bytes()[:30])  # truncated
    train, _, spec = data.load_train_val(str(tmp_path / 'imgs'), val_fraction=0.25)
    train.rows = np.arange(8)  # every row, the broken one included
    torch_ds = data.ImageClassificationDataset(train, lambda im: torch.zeros(1), in_chans=1, source=spec.name)
    loader = torch.utils.data.DataLoader(torch_ds, batch_size=2, num_workers=2)
    with pytest.raises(DataError) as e:
        list(loader)
    message = str(e.value)
    assert '\n' not in message and 'Traceback' not in message and 'DataLoader worker' not in message
    assert message.startswith('cannot read or transform the image in row 6 (file ') and str(broken) in message
    assert 'Traceback' in e.value.worker_traceback  # kept for debugging, not printed
