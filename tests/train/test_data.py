"""Data: the embedded datasets, loading every supported format, column detection, label checks, image modes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hybrid_zoo import atomic
from hybrid_zoo.train import data, embedded
from hybrid_zoo.train.data import DataError
from hybrid_zoo_cli import data as data_cli

pytestmark = pytest.mark.train


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


def _tiny_dataset(n: int = 24, **columns):
    """``n`` 8x8 grayscale images with labels ``i % 3``; extra columns override the defaults."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as HFImage

    rng = np.random.default_rng(0)
    values = {
        'image': [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(n)],
        'label': [i % 3 for i in range(n)],
    }
    features = {'image': HFImage(), 'label': ClassLabel(names=['a', 'b', 'c'])}
    for name, (feature, column) in columns.items():
        values[name], features[name] = column, feature
    return Dataset.from_dict(values, features=Features(features))


def test_prepare_digits(digits_dir):
    from datasets import ClassLabel, load_from_disk
    from datasets import Image as HFImage

    dd = load_from_disk(str(digits_dir))
    assert {k: len(v) for k, v in dd.items()} == {'train': 1437, 'test': 360}
    assert isinstance(dd['train'].features['image'], HFImage)
    assert dd['train'].features['label'] == ClassLabel(names=[str(i) for i in range(10)])
    image = dd['train'][0]['image']
    assert image.size == (8, 8) and image.mode == 'L'
    assert not [p for p in digits_dir.parent.iterdir() if p.name.startswith('.')]  # no temp folders left


@pytest.mark.skipif(not data.fashion_mnist_available(), reason='Debian package dataset-fashion-mnist not installed')
def test_prepare_fashion_mnist(tmp_path):
    dd = data.prepare_fashion_mnist(tmp_path / 'fm')
    assert {k: len(v) for k, v in dd.items()} == {'train': 60000, 'test': 10000}
    names = dd['train'].features['label'].names
    assert names[0] == 'T-shirt/top' and names[9] == 'Ankle boot' and len(names) == 10
    image = dd['test'][0]['image']
    assert image.size == (28, 28) and image.mode == 'L'
    # the first test image of Fashion-MNIST is an ankle boot
    assert dd['test'][0]['label'] == 9
    assert np.bincount(dd['train']['label'], minlength=10).tolist() == [6000] * 10


def test_prepare_default_falls_back_to_digits_and_reuses(tmp_path, monkeypatch):
    monkeypatch.setattr(embedded, 'fashion_mnist_available', lambda *a: False)
    name, path = data.prepare_default(tmp_path)
    assert name == 'digits' and path == str(tmp_path / 'digits')
    stamp = (tmp_path / 'digits' / 'dataset_dict.json').stat().st_mtime_ns
    assert data.prepare_default(tmp_path) == (name, path)
    assert (tmp_path / 'digits' / 'dataset_dict.json').stat().st_mtime_ns == stamp  # not rebuilt


def test_replace_dir_is_recoverable(tmp_path):
    dst = tmp_path / 'ckpt'
    for version in ('v1', 'v2'):
        tmp = atomic.temp_dir_beside(dst)
        (tmp / 'f').write_text(version)
        atomic.replace_dir(tmp, dst)
    assert (dst / 'f').read_text() == 'v2'
    # a kill between the two renames of replace_dir leaves only .ckpt.old: recover_dir puts it back
    (tmp_path / 'ckpt').rename(tmp_path / '.ckpt.old')
    assert (atomic.recover_dir(dst) / 'f').read_text() == 'v2'


def test_every_format_loads_the_same_rows(tmp_path, digits_dir):
    from datasets import load_from_disk

    dd = load_from_disk(str(digits_dir))
    small = dd['test'].select(range(30))
    small.to_parquet(str(tmp_path / 'part.parquet'))
    for i, ex in enumerate(small):
        folder = tmp_path / 'imgs' / 'train' / str(ex['label'])
        folder.mkdir(parents=True, exist_ok=True)
        ex['image'].save(folder / f'{i}.png')
    expected = sorted(small['label'])
    for source in (str(tmp_path / 'part.parquet'), str(tmp_path / 'imgs')):
        train, val, spec = data.load_train_val(source, val_fraction=0.2, seed=0)
        assert spec.image_column == 'image' and spec.label_column == 'label'
        got = np.concatenate([train.labels(), val.labels()])
        names = np.array(spec.label_names)
        assert sorted(int(n) for n in names[got]) == expected  # imagefolder names classes by folder
    train, val, spec = data.load_train_val(str(digits_dir))  # no validation split: carved from train, not test
    assert (spec.num_train, spec.num_val, spec.val_split) == (1293, 144, 'train[val 0.1, seed 0]')
    train, val, spec = data.load_train_val(str(digits_dir), val_split='test')
    assert (spec.num_train, spec.num_val, spec.val_split) == (1437, 360, 'test')


def test_val_split_is_carved_seeded_and_stratified(tmp_path):
    from datasets import DatasetDict

    DatasetDict({'train': _tiny_dataset(60)}).save_to_disk(str(tmp_path / 'ds'))
    a_train, a_val, spec = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.25, seed=3)
    b_train, b_val, _ = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.25, seed=3)
    c_train, c_val, _ = data.load_train_val(str(tmp_path / 'ds'), val_fraction=0.25, seed=4)
    assert len(a_val) == 15 and len(a_train) == 45
    assert not set(a_train.rows) & set(a_val.rows)
    assert np.array_equal(a_val.rows, b_val.rows) and not np.array_equal(a_val.rows, c_val.rows)
    assert np.bincount(a_val.labels()).tolist() == [5, 5, 5]
    assert spec.val_split == 'train[val 0.25, seed 3]'


def test_columns_detected_or_given(tmp_path):
    from datasets import DatasetDict, Value
    from datasets import Image as HFImage

    ds = _tiny_dataset(12).rename_columns({'image': 'img', 'label': 'target'})
    assert data.detect_columns(ds.features) == ('img', 'target')
    odd = _tiny_dataset(12, photo2=(HFImage(), list(ds['img'])), y=(Value('int64'), [0] * 12))
    odd = odd.remove_columns(['image', 'label'])
    with pytest.raises(DataError, match=r"has no column 'picture'") as e:
        data.detect_columns(odd.features, label_column='y', image_column='picture')
    assert "'photo2'" in str(e.value) and "'y'" in str(e.value)
    assert data.detect_columns(odd.features, image_column='photo2', label_column='y') == ('photo2', 'y')
    DatasetDict({'train': odd}).save_to_disk(str(tmp_path / 'odd'))
    with pytest.raises(DataError, match='label column') as e:
        data.load_train_val(str(tmp_path / 'odd'))
    assert 'photo2' in str(e.value) and '--label-column' in str(e.value)


def test_string_and_int_labels(tmp_path):
    from datasets import DatasetDict, Value

    ds = _tiny_dataset(12, label=(Value('string'), ['cat', 'dog', 'owl'] * 4))
    DatasetDict({'train': ds}).save_to_disk(str(tmp_path / 's'))
    _, _, spec = data.load_train_val(str(tmp_path / 's'), val_fraction=0.25)
    assert spec.label_names == ['cat', 'dog', 'owl']
    ds = _tiny_dataset(12, label=(Value('int64'), [0, 1, 4] * 4))
    DatasetDict({'train': ds}).save_to_disk(str(tmp_path / 'i'))
    _, _, spec = data.load_train_val(str(tmp_path / 'i'), val_fraction=0.25)
    assert spec.label_names == ['0', '1', '2', '3', '4']


def test_labels_outside_num_classes(tmp_path):
    from datasets import DatasetDict, Value

    ds = _tiny_dataset(12, label=(Value('int64'), [0, 1, 2, 3, 7, -1] * 2))
    DatasetDict({'train': ds, 'test': ds}).save_to_disk(str(tmp_path / 'bad'))
    with pytest.raises(DataError, match=r"labels outside \[0, 3\): row 3 of split 'train' of .*bad has label 3"):
        data.load_train_val(str(tmp_path / 'bad'), num_classes=3)
    with pytest.raises(DataError, match=r"row 5 of split 'train' of .*bad has label -1"):
        data.load_train_val(str(tmp_path / 'bad'))


def test_unreadable_image_names_the_row(tmp_path):
    from datasets import Dataset, Features
    from datasets import Image as HFImage

    buf = io.BytesIO()
    Image.new('L', (8, 8)).save(buf, format='PNG')
    images = [{'bytes': buf.getvalue(), 'path': None}] * 6
    images[4] = {'bytes': b'this is not an image', 'path': None}
    ds = Dataset.from_dict({'image': images, 'label': [0] * 6}, features=Features({'image': HFImage(), 'label': _cl()}))
    split = data.Split(ds, np.arange(6), 'train', 'image', 'label')
    torch_ds = data.ImageClassificationDataset(split, lambda im: torch.zeros(1), in_chans=1, source='broken')
    assert torch_ds[3][1] == 0
    with pytest.raises(DataError, match=r"row 4 of split 'train' of broken"):
        torch_ds[4]
    loader = torch.utils.data.DataLoader(torch_ds, batch_size=6)
    with pytest.raises(DataError, match='row 4'):
        next(iter(loader))


def _cl():
    from datasets import ClassLabel

    return ClassLabel(names=['x'])


def test_image_modes_follow_in_chans():
    rgba = Image.new('RGBA', (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert data.to_model_mode(rgba, 3).getpixel((0, 0)) == (255, 255, 255)  # composited onto white
    assert data.to_model_mode(Image.new('L', (4, 4), 7), 3).getpixel((0, 0)) == (7, 7, 7)
    assert data.to_model_mode(Image.new('RGB', (4, 4), (9, 9, 9)), 1).mode == 'L'
    deep = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    assert data.to_model_mode(deep, 1).getpixel((1, 1)) == 255  # 16-bit range scaled, not clipped


def test_one_channel_data_config_and_transforms():
    import timm
    from timm.data import create_transform

    model = timm.create_model('test_convnext', in_chans=1, num_classes=3)
    cfg = data.model_data_config(model, img_size=32)
    assert cfg['input_size'] == (1, 32, 32) and len(cfg['mean']) == len(cfg['std']) == 1
    image = data.to_model_mode(Image.new('RGBA', (20, 28)), 1)
    for aa in (None, 'rand-m9-mstd0.5-inc1', 'augmix-m5-w4-d2'):
        assert create_transform(**cfg, is_training=True, auto_augment=aa, re_prob=0.5)(image).shape == (1, 32, 32)
    assert create_transform(**cfg)(image).shape == (1, 32, 32)
    rgb = data.model_data_config(timm.create_model('test_convnext', num_classes=3), img_size=24)
    assert rgb['input_size'] == (3, 24, 24) and len(rgb['mean']) == 3


def test_prepare_data_cli(tmp_path, capsys):
    parser = data_cli.build_parser()
    assert all(a.help for a in parser._actions)
    assert data_cli.main(['--dataset', 'digits', '--out-dir', str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / 'digits')
    assert (tmp_path / 'digits' / 'dataset_dict.json').is_file()
