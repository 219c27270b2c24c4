"""The embedded datasets: real Fashion-MNIST (Debian package ``dataset-fashion-mnist``) and scikit-learn's digits,
written as ordinary ``datasets`` folders on disk (``image``: ``Image()``, ``label``: ``ClassLabel`` with the real
class names), atomically. ``--dataset default`` is whichever of the two is installed, prepared under
``EMBEDDED_CACHE`` (the one default of every command and function that prepares it).
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as HFImage
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from hybrid_zoo.atomic import recover_dir, replace_dir, temp_dir_beside
from hybrid_zoo.labels import DIGITS_CLASSES, FASHION_MNIST_CLASSES
from hybrid_zoo.train.checks import DataError
from hybrid_zoo_config.data import EMBEDDED_CACHE, FASHION_MNIST_DIR  # noqa: F401  (their one home, torch-free)

logger = logging.getLogger('hybrid_zoo.train.data')

# what save_to_disk writes for a DatasetDict: the only files replacing a prepared folder may remove
_SAVED_FILE = re.compile(r'dataset_dict\.json|[^/]+/(state\.json|dataset_info\.json|data-\d{5}-of-\d{5}\.arrow)')


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST container format: big-endian header, then raw uint8 data)."""
    with gzip.open(path, 'rb') as f:
        raw = f.read()
    zero, dtype_code, ndim = struct.unpack('>HBB', raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f'{path} is not an unsigned-byte IDX file (header {raw[:4].hex()})')
    shape = struct.unpack(f'>{ndim}I', raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist_available(source_dir: str | os.PathLike = FASHION_MNIST_DIR) -> bool:
    """Whether the four Fashion-MNIST IDX files (Debian package ``dataset-fashion-mnist``) are present."""
    names = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz')
    return all((Path(source_dir) / n).is_file() for n in names + ('t10k-labels-idx1-ubyte.gz',))


def _class_dataset(images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]) -> Dataset:
    features = Features({'image': HFImage(), 'label': ClassLabel(names=list(names))})
    # datasets encodes each (H, W) uint8 array as a grayscale PNG
    return Dataset.from_dict({'image': list(images), 'label': labels.astype(np.int64).tolist()}, features=features)


def foreign_saved_files(folder: Path) -> list[str]:
    """Files below ``folder`` that ``save_to_disk`` did not write (relative paths): what replacing it would delete."""
    if not folder.is_dir():
        return []
    files = (p.relative_to(folder).as_posix() for p in sorted(folder.rglob('*')) if not p.is_dir())
    return [f for f in files if not _SAVED_FILE.fullmatch(f)]


def save_dataset(dataset: DatasetDict, out_dir: str | os.PathLike) -> Path:
    """``save_to_disk`` into a temporary sibling folder, then rename it into place (no half-written datasets).

    Raises:
        DataError: ``out_dir`` is a file, or holds files ``save_to_disk`` does not write (they are named; replacing
            the folder would delete them).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f'{out_dir} is a file; expected a folder to write the dataset into')
    foreign = foreign_saved_files(out_dir)
    if foreign:
        raise DataError(
            f'{out_dir} holds files that are not part of a saved dataset: {foreign[:8]}'
            f'{" ..." if len(foreign) > 8 else ""}; writing the dataset replaces the folder, which would delete them. '
            'Move them elsewhere, or choose another --out-dir'
        )
    tmp = temp_dir_beside(out_dir)
    try:
        dataset.save_to_disk(str(tmp))
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def prepare_fashion_mnist(out_dir: str | os.PathLike, source_dir: str | os.PathLike = FASHION_MNIST_DIR) -> DatasetDict:
    """Write Fashion-MNIST (60,000 train / 10,000 test, 28x28 grayscale, 10 classes) as a HF dataset.

    Args:
        out_dir: Folder to ``save_to_disk`` into; replaced atomically if it exists.
        source_dir: Folder holding the four IDX ``.gz`` files (``dpkg -L dataset-fashion-mnist``).

    Returns:
        The ``DatasetDict`` with splits ``train`` and ``test``.
    """
    source_dir = Path(source_dir)
    if not fashion_mnist_available(source_dir):
        raise DataError(
            f'Fashion-MNIST IDX files not found in {source_dir}; install them with '
            "'apt-get install -y dataset-fashion-mnist' or use the digits data (prepare_digits)"
        )
    splits = {}
    for split, prefix in (('train', 'train'), ('test', 't10k')):
        images = read_idx(source_dir / f'{prefix}-images-idx3-ubyte.gz')  # (N, 28, 28)
        labels = read_idx(source_dir / f'{prefix}-labels-idx1-ubyte.gz')  # (N,)
        splits[split] = _class_dataset(images, labels, FASHION_MNIST_CLASSES)
    dd = DatasetDict(splits)
    save_dataset(dd, out_dir)
    logger.info('Fashion-MNIST written to %s (%s)', out_dir, {k: len(v) for k, v in dd.items()})
    return dd


def prepare_digits(out_dir: str | os.PathLike, test_fraction: float = 0.2, seed: int = 0) -> DatasetDict:
    """Write scikit-learn's digits (1,797 8x8 grayscale images, 10 classes) as a HF dataset.

    The images are the UCI "Optical Recognition of Handwritten Digits" test set; pixel values 0..16 are scaled to
    0..255. The train/test split is stratified and seeded.

    Args:
        out_dir: Folder to ``save_to_disk`` into; replaced atomically if it exists.
        test_fraction: Share of the images held out as ``test``.
        seed: Seed of the split.

    Returns:
        The ``DatasetDict`` with splits ``train`` and ``test``.
    """
    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)  # (N, 8, 8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    dd = DatasetDict(
        {
            'train': _class_dataset(images[idx_train], digits.target[idx_train], DIGITS_CLASSES),
            'test': _class_dataset(images[idx_test], digits.target[idx_test], DIGITS_CLASSES),
        }
    )
    save_dataset(dd, out_dir)
    logger.info('digits written to %s (%s)', out_dir, {k: len(v) for k, v in dd.items()})
    return dd


def prepare_default(out_dir: str | os.PathLike = EMBEDDED_CACHE, overwrite: bool = False) -> tuple[str, str]:
    """Prepare the demo dataset: Fashion-MNIST when its Debian package is installed, digits otherwise.

    Args:
        out_dir: Parent folder; the dataset goes to ``<out_dir>/fashion_mnist`` or ``<out_dir>/digits``.
        overwrite: Rebuild even if the folder already holds a saved dataset.

    Returns:
        ``(name, path)``, e.g. ``('fashion_mnist', 'data/fashion_mnist')``.
    """
    name = default_name()
    prepare = prepare_fashion_mnist if name == 'fashion_mnist' else prepare_digits
    return name, prepare_once(name, prepare, Path(out_dir) / name, overwrite)


def default_name() -> str:
    """The embedded dataset ``--dataset default`` is: ``'fashion_mnist'`` when installed, else ``'digits'``."""
    return 'fashion_mnist' if fashion_mnist_available() else 'digits'


def prepare_once(name: str, prepare: Callable[[Path], object], path: Path, overwrite: bool) -> str:
    """``prepare(path)`` unless ``path`` already holds a saved dataset (an interrupted replacement is restored)."""
    recover_dir(path)
    if overwrite or not (path / 'dataset_dict.json').is_file():
        prepare(path)
    else:
        logger.info('using the %s dataset already at %s', name, path)
    return str(path)
