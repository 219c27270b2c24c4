"""Image-classification data: the embedded default datasets, and any Hugging Face dataset made ready for training.

Two jobs live here:

* ``prepare_*``: turn the real Fashion-MNIST (Debian package ``dataset-fashion-mnist``) and scikit-learn's digits into
  ordinary ``datasets`` folders on disk (``image``: ``Image()``, ``label``: ``ClassLabel`` with the real class names),
  written atomically. ``hybrid-zoo prepare-data`` is the command line for it.
* ``load_train_val`` / ``load_eval_split``: open any dataset with an image column and a label column (a Hub id, a local
  ``imagefolder`` directory, parquet files, a ``save_to_disk`` folder), detect the columns, validate the labels, carve
  a validation split out of train when there is none (never the test split unless asked: what validates picks the
  checkpoint), and wrap a split as a torch ``Dataset`` whose decode errors name the row.

Images are decoded lazily (``with_transform``), converted to the model's ``in_chans`` (grayscale, RGBA and palette
images included) and transformed by timm's ``create_transform``.
"""

from __future__ import annotations

import glob
import gzip
import json
import logging
import os
import re
import shutil
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from datasets import Image as HFImage
from datasets.data_files import DataFilesDict, get_data_patterns
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from timm.data import resolve_data_config

from hybrid_zoo.atomic import recover_dir, replace_dir, temp_dir_beside
from hybrid_zoo.labels import DIGITS_CLASSES, FASHION_MNIST_CLASSES
from hybrid_zoo.normalization import for_channels
from hybrid_zoo_config.data import EMBEDDED_CACHE, FASHION_MNIST_DIR  # noqa: F401 (re-exported)

logger = logging.getLogger('hybrid_zoo.train.data')  # not __name__: that is '__main__' under python -m

# names tried, in order, when no validation split is given; never 'test': the validation split picks the checkpoint
VAL_SPLIT_CANDIDATES = ('validation', 'valid', 'val')
_TEST_SPLIT_NAMES = ('test', 'testing')
# a --dataset ending so is a file, never a Hub id
_DATA_FILE_SUFFIXES = ('.parquet', '.arrow', '.csv', '.json', '.jsonl', '.txt', '.zip', '.tar', '.gz', '.tgz')
_IMAGE_NAMES = ('image', 'img', 'images', 'pixel_values', 'picture', 'photo')
_LABEL_NAMES = ('label', 'labels', 'target', 'targets', 'class', 'fine_label', 'category')


class DataError(ValueError):
    """A dataset that cannot be used as asked; the message says what was expected and what was found.

    Raised in a DataLoader worker, it reaches the main process re-created by torch with the worker's whole traceback
    as its message; the message is cut back to the original one line (the traceback stays in ``worker_traceback``).
    """

    def __init__(self, message: str = '', *args: Any) -> None:
        self.worker_traceback = None
        name = type(self).__name__
        if isinstance(message, str) and message.startswith(f'Caught {name} in DataLoader worker'):
            # the traceback ends with the line '<module>.DataError: <original message>'
            matches = list(re.finditer(rf'^(?:[\w.]+\.)?{name}: ', message, flags=re.MULTILINE))
            last = matches[-1] if matches else None
            if last is not None:
                self.worker_traceback, message = message, message[last.end() :].rstrip()
        super().__init__(message, *args)


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


def _class_dataset(images: np.ndarray, labels: np.ndarray, names: tuple[str, ...]):

    features = Features({'image': HFImage(), 'label': ClassLabel(names=list(names))})
    # datasets encodes each (H, W) uint8 array as a grayscale PNG
    return Dataset.from_dict({'image': list(images), 'label': labels.astype(np.int64).tolist()}, features=features)


def save_dataset(dataset, out_dir: str | os.PathLike) -> Path:
    """``save_to_disk`` into a temporary sibling folder, then rename it into place (no half-written datasets)."""
    out_dir = Path(out_dir)
    tmp = temp_dir_beside(out_dir)
    try:
        dataset.save_to_disk(str(tmp))
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def prepare_fashion_mnist(out_dir: str | os.PathLike, source_dir: str | os.PathLike = FASHION_MNIST_DIR):
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


def prepare_digits(out_dir: str | os.PathLike, test_fraction: float = 0.2, seed: int = 0):
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
    name, prepare = (
        ('fashion_mnist', prepare_fashion_mnist) if fashion_mnist_available() else ('digits', prepare_digits)
    )
    return name, _prepare_once(name, prepare, Path(out_dir) / name, overwrite)


def _prepare_once(name: str, prepare, path: Path, overwrite: bool) -> str:
    """``prepare(path)`` unless ``path`` already holds a saved dataset (an interrupted replacement is restored)."""
    recover_dir(path)
    if overwrite or not (path / 'dataset_dict.json').is_file():
        prepare(path)
    else:
        logger.info('using the %s dataset already at %s', name, path)
    return str(path)


# ----------------------------------------------------------------------------------------------------------------------
# Opening any dataset


def _is_saved_dataset(path: Path) -> bool:
    return (path / 'dataset_dict.json').is_file() or (path / 'state.json').is_file()


def open_dataset(
    source: str, config: str | None = None, embedded_cache: str | os.PathLike = EMBEDDED_CACHE
) -> tuple[Any, str]:
    """Open a dataset from any of the supported places.

    Args:
        source: ``'default'`` (the embedded demo data, prepared under ``embedded_cache`` when missing), a
            ``save_to_disk`` folder, a local folder ``load_dataset`` understands (``imagefolder``, parquet files, a
            Hub-style repo checkout), one parquet file or a glob of them (split by file name, as ``datasets`` does:
            ``train-0.parquet`` -> ``train``), or a Hub dataset id (``org/name``).
        config: The Hub dataset configuration (``name=`` of ``load_dataset``).
        embedded_cache: Where ``'default'`` is prepared; nothing else is written anywhere near the data.

    Returns:
        ``(DatasetDict, display name)``.

    Raises:
        DataError: a path that does not exist (at once, never tried as a Hub id), files of another format, or a Hub
            dataset that does not exist or cannot be reached (one line, no retries).
    """

    if source == 'default':
        _, source = prepare_default(embedded_cache)
    path = Path(source).expanduser()
    if path.is_dir():
        recover_dir(path)
        if _is_saved_dataset(path):
            loaded = _local(source, lambda: datasets.load_from_disk(str(path)), path)
        else:
            loaded = _local(source, lambda: datasets.load_dataset(str(path), name=config))
    elif path.is_file():
        loaded = _local(source, lambda: _load_parquet(source, [str(path)], by_name=False))
    elif _has_glob(source):
        files = sorted(f for f in glob.glob(str(path), recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError(f'no such folder/file: {source} (the pattern matches no file)')
        loaded = _local(source, lambda: _load_parquet(source, files, by_name=True))
    elif looks_like_path(source):
        raise DataError(
            f'no such folder/file: {source} (expected an existing save_to_disk folder, imagefolder directory or '
            'parquet file(s); a Hub id is written org/name)'
        )
    else:
        loaded = _load_hub_dataset(source, config)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({'train': loaded})
    return loaded, source


def _local(source: str, load, saved: Path | None = None):
    """``load()`` of local files, its errors as one ``DataError`` line (an empty split is named as such)."""
    try:
        return load()
    except DataError:
        raise
    except (IndexError, KeyError, ValueError, TypeError, OSError) as e:
        empty = _empty_saved_splits(saved) if saved is not None else []
        if empty:
            raise DataError(
                f'dataset {source} has empty split(s) {empty} (0 rows), which datasets cannot load; remove them or '
                'give them rows'
            ) from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        hint = ' (an empty split?)' if 'corresponds to no data' in first else ''
        raise DataError(f'cannot load dataset {source}: {type(e).__name__}: {first}{hint}') from e


def _empty_saved_splits(path: Path) -> list[str]:
    """Splits of a ``save_to_disk`` folder that hold no data files (``load_from_disk`` fails on them)."""

    try:
        names = json.loads((path / 'dataset_dict.json').read_text())['splits']
        return [n for n in names if not json.loads((path / n / 'state.json').read_text()).get('_data_files')]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _has_glob(source: str) -> bool:
    return any(c in source for c in '*?[')


def looks_like_path(source: str) -> bool:
    """Whether ``--dataset`` names a local path rather than a Hub id (``name`` or ``org/name``).

    Paths start with ``.``, ``/`` or ``~``, have more than one separator, end with a data file extension or hold
    glob characters; such a source that does not exist is a typo, not a dataset to look up on the Hub.
    """
    if source.startswith(('.', '/', '~')) or _has_glob(source):
        return True
    if source.count('/') > 1 or (os.sep != '/' and os.sep in source):
        return True
    return source.lower().endswith(_DATA_FILE_SUFFIXES)


def _load_parquet(source: str, files: list[str], by_name: bool):
    """Parquet files as a ``DatasetDict``; ``by_name``: split them by file name as ``datasets`` does for a folder."""

    others = [f for f in files if not f.endswith('.parquet')]
    if others:
        raise DataError(
            f'cannot tell the format of {others[:3]} ({source}); expected parquet files, a folder or a Hub dataset id'
        )
    data_files = _parquet_splits(source, files) if by_name else {'train': files}
    return datasets.load_dataset('parquet', data_files=data_files)


def _parquet_splits(source: str, files: list[str]) -> dict[str, list[str]]:
    """The files of a glob by split, inferred from their names with ``datasets``' own patterns.

    ``data/*.parquet`` matching ``train-0.parquet`` and ``test-0.parquet`` gives ``{'train': [...], 'test': [...]}``
    (merging them would train on the test images). A file no split claims, or one claimed twice, is refused.
    """

    files = [os.path.abspath(f) for f in files]
    base = os.path.commonpath([os.path.dirname(f) for f in files])
    resolved = DataFilesDict.from_patterns(get_data_patterns(base), base_path=base)
    wanted = set(files)
    splits = {s: sorted(wanted & {os.path.abspath(p) for p in paths}) for s, paths in resolved.items()}
    splits = {s: f for s, f in splits.items() if f}
    claimed = [f for fs in splits.values() for f in fs]
    unclaimed = sorted(wanted - set(claimed))
    if unclaimed or len(claimed) != len(set(claimed)):
        listing = '; '.join(f'{s}: {[os.path.basename(f) for f in fs]}' for s, fs in splits.items())
        raise DataError(
            f'cannot tell the splits of the files matched by {source}: by name they are {listing}'
            + (f'; no split for {[os.path.basename(f) for f in unclaimed]}' if unclaimed else '; a file in two splits')
            + ". Name them train-*/validation-*/test-*.parquet, or give each split's files as its own pattern"
        )
    logger.info('%s: parquet files by split (from their names): %s', source, {s: len(f) for s, f in splits.items()})
    return splits


def _load_hub_dataset(source: str, config: str | None):
    """``load_dataset`` of a Hub id; one clear line (no retry storm) when it does not exist or cannot be reached."""

    if not datasets.config.HF_HUB_OFFLINE:  # offline, load_dataset reads the local cache
        try:
            HfApi().dataset_info(source, timeout=10)
        except HFValidationError:
            raise DataError(
                f'no such folder/file and no valid Hub id: {source!r} (expected a local path or org/name)'
            ) from None
        except RepositoryNotFoundError:
            raise DataError(
                f'no such dataset: {source!r} is not a local folder or file, nor a dataset on the Hub '
                f'({constants.ENDPOINT}); a private or gated one needs HF_TOKEN'
            ) from None
        except HfHubHTTPError:
            pass  # e.g. gated or rate limited: load_dataset says what to do
        except Exception as e:  # the transport's own errors (no network, DNS, timeout)
            raise DataError(
                f'{source!r} is not a local folder or file, and the Hub ({constants.ENDPOINT}) cannot be reached to '
                f'look it up ({type(e).__name__}: {e}); a Hub dataset downloaded before loads with HF_HUB_OFFLINE=1'
            ) from None
    try:
        return datasets.load_dataset(source, name=config)
    except (OSError, ValueError) as e:  # DatasetNotFoundError, hub HTTP errors, an unknown configuration
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f'cannot load Hub dataset {source!r}: {first}') from e


def detect_columns(features, image_column: str | None = None, label_column: str | None = None) -> tuple[str, str]:
    """Find the image and label columns of a dataset (or check the ones given).

    An image column is an ``Image()`` feature, a ``{bytes, path}`` struct (images written by pyarrow without the
    ``datasets`` metadata) or, by name, a column called e.g. ``image``/``img``; a label column is a ``ClassLabel``, or
    an integer or string column called e.g. ``label``/``target``.

    Raises:
        DataError: naming the columns the dataset has when a column is missing.
    """

    columns = {name: type(feat).__name__ for name, feat in features.items()}

    def missing(kind: str, given: str | None, flag: str) -> DataError:
        what = f'column {given!r}' if given else f'{kind} column'
        return DataError(f'dataset has no {what}; it has columns {columns}. Pass {flag} NAME to choose one.')

    if image_column is None:
        image_column = next((n for n, f in features.items() if isinstance(f, HFImage)), None)
        image_column = image_column or next((n for n, f in features.items() if _is_image_struct(f)), None)
        image_column = image_column or next((n for n in _IMAGE_NAMES if n in features), None)
    if image_column is None or image_column not in features:
        raise missing('image', image_column, '--image-column')
    if label_column is None:
        label_column = next((n for n, f in features.items() if isinstance(f, ClassLabel)), None)
        label_column = label_column or next(
            (n for n in _LABEL_NAMES if isinstance(features.get(n), Value) and n != image_column), None
        )
    if label_column is None or label_column not in features:
        raise missing('label', label_column, '--label-column')
    return image_column, label_column


# ----------------------------------------------------------------------------------------------------------------------
# Splits, labels, identity


@dataclass
class Split:
    """Rows of one split of a HF dataset: ``rows`` index into ``dataset`` (so errors can name the original row).

    ``label_map`` (when set) turns the split's stored class indices into the training split's: a validation
    ``ClassLabel`` that lists the same names in another order is read by name, not by index.
    """

    dataset: Any
    rows: np.ndarray
    name: str
    image_column: str
    label_column: str
    label_map: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self) -> np.ndarray:
        """The label of every row, as int64, in the training split's class order.

        Raises:
            DataError: a row without a label (``None``), naming the first such row.
        """
        # slicing the whole (indices-aware) table: indexing by column name iterates row by row in datasets 5
        column = np.asarray(self.dataset.select_columns([self.label_column]).with_format('numpy')[:][self.label_column])
        if column.dtype.kind in 'fO':  # a None among numbers comes out as NaN (floats) or None (objects)
            missing = np.isnan(column) if column.dtype.kind == 'f' else np.array([v is None for v in column], bool)
            bad = np.flatnonzero(missing[self.rows])
            if bad.size:
                raise DataError(
                    f'split {self.name!r} has rows without a label: row {int(self.rows[bad[0]])} has label None '
                    f'({bad.size} such rows); every row needs a class label'
                )
        return map_labels(column.astype(np.int64)[self.rows], self.label_map)


def map_labels(labels: np.ndarray, label_map: np.ndarray | None) -> np.ndarray:
    """``label_map[labels]`` for labels inside the map; others (e.g. -1, unlabelled) stay for ``check_labels``."""
    if label_map is None:
        return labels
    labels = np.array(labels, dtype=np.int64, copy=True)
    inside = (labels >= 0) & (labels < len(label_map))
    labels[inside] = label_map[labels[inside]]
    return labels


@dataclass
class DataSpec:
    """What was loaded: enough to describe the data in model cards and to refuse resuming on other data."""

    name: str
    path: str | None
    config: str | None
    train_split: str
    val_split: str
    image_column: str
    label_column: str
    label_names: list[str]
    num_train: int
    num_val: int
    val_source: str = ''  # where the validation rows come from, e.g. 'validation carved from train, 10%, ...'
    fingerprint: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def identity(self) -> dict:
        """The fields that must match for a checkpoint to be resumed on this data."""
        return {
            'name': self.name,
            'config': self.config,
            'train_split': self.train_split,
            'val_split': self.val_split,
            'val_source': self.val_source,
            'label_names': list(self.label_names),
            'num_train': self.num_train,
            'num_val': self.num_val,
        }


def _label_kind(feature: Any) -> str | None:

    if isinstance(feature, ClassLabel):
        return 'ClassLabel'
    if isinstance(feature, Value) and feature.dtype in ('string', 'large_string'):
        return 'string'
    if isinstance(feature, Value) and 'int' in feature.dtype:
        return 'integer'
    return None


def _encode_labels(
    dd, splits: list[str], label_column: str
) -> tuple[Any, list[str] | None, dict[str, np.ndarray | None]]:
    """Class names and per-split label maps.

    Names come from the first split's ``ClassLabel``; another split whose ``ClassLabel`` lists the same names in
    another order gets a map to the first split's order (it is read by name, with a warning). String labels become
    a ``ClassLabel`` (sorted names over all splits). Integer labels have no names.

    Returns:
        ``(dd, names or None, {split: label map or None})``.

    Raises:
        DataError: label types that differ between splits, a split naming classes the first split lacks, a string
            label that is ``None``, a label column of another type.
    """

    features = {s: dd[s].features[label_column] for s in splits}
    kinds = {s: _label_kind(f) for s, f in features.items()}
    maps: dict[str, np.ndarray | None] = dict.fromkeys(splits)
    for s, kind in kinds.items():
        if kind is None:
            raise DataError(
                f'label column {label_column!r} of split {s!r} has type {features[s]}; expected ClassLabel, integer '
                'or string labels'
            )
    if len(set(kinds.values())) > 1:
        listing = ', '.join(f'{s!r}: {kinds[s]}' for s in splits)
        raise DataError(
            f'label column {label_column!r} has different types across splits ({listing}); expected one type in '
            "every split, e.g. cast_column('label', ClassLabel(names=[...])) on each"
        )
    kind, first = kinds[splits[0]], splits[0]
    if kind == 'ClassLabel':
        names = list(features[first].names)
        for s in splits[1:]:
            other = list(features[s].names)
            if other == names:
                continue
            unknown = [n for n in other if n not in names]
            if unknown or len(set(other)) != len(other):
                raise DataError(
                    f'split {s!r} names its classes {other}, split {first!r} names them {names}: '
                    f'{unknown or "duplicate names"} cannot be matched to a training class; expected the same '
                    'class names in every split'
                )
            maps[s] = np.array([names.index(n) for n in other], dtype=np.int64)
            logger.warning(
                'split %r lists its class names in another order than split %r (%s vs %s): its labels are read by '
                'name and remapped to the training order',
                s,
                first,
                other,
                names,
            )
        return dd, names, maps
    if kind == 'string':
        values = set()
        for s in splits:
            unique = dd[s].unique(label_column)
            if None in unique:
                column = dd[s].select_columns([label_column]).with_format('arrow')[:][label_column]
                row = column.to_pylist().index(None)
                raise DataError(
                    f'split {s!r} has rows without a label: row {row} has label None; every row needs a class label'
                )
            values.update(unique)
        names = sorted(values)
        class_label = ClassLabel(names=names)
        for s in splits:
            dd[s] = dd[s].cast_column(label_column, class_label)
        return dd, names, maps
    return dd, None, maps


def check_labels(split: Split, num_classes: int, source: str) -> None:
    """Raise a ``DataError`` naming the first offending row if any label is outside ``[0, num_classes)``."""
    labels = split.labels()
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        first = int(split.rows[bad[0]])
        values = sorted({int(v) for v in labels[bad][:1000]})
        raise DataError(
            f'labels outside [0, {num_classes}) in split {split.name!r} of {source}: row {first} has label '
            f'{int(labels[bad[0]])} ({bad.size} such rows; values {values[:10]}). Pass --num-classes to cover them, '
            'or fix the labels (-1 usually marks an unlabelled test split: evaluate on another split).'
        )


def _subset(rows: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray:
    if max_samples is None or max_samples >= len(rows):
        return rows
    # a random (not leading) subset: imagefolder datasets are sorted by class
    return np.sort(np.random.default_rng(seed).choice(rows, size=max_samples, replace=False))


def _is_image_struct(feature: Any) -> bool:
    """An encoded-image struct (``{'bytes': binary, 'path': string}``) that lacks the ``Image()`` feature type."""

    bytes_feature = feature.get('bytes') if isinstance(feature, dict) else None
    return (
        isinstance(bytes_feature, Value)
        and bytes_feature.dtype in ('binary', 'large_binary')
        and set(feature) <= {'bytes', 'path'}
    )


def _prepare_columns(dd, image_column: str):
    """The image column as ``Image()``: file paths and ``{bytes, path}`` structs are cast (decoding stays lazy).

    Raises:
        DataError: an image column of any other type (arrays, numbers), before the first batch rather than in it.
    """

    for s in dd:
        feature = dd[s].features[image_column]
        if isinstance(feature, HFImage):
            continue
        encoded = ('string', 'large_string', 'binary', 'large_binary')  # paths or image file bytes
        if (isinstance(feature, Value) and feature.dtype in encoded) or _is_image_struct(feature):
            dd[s] = dd[s].cast_column(image_column, HFImage())
        else:
            raise DataError(
                f'image column {image_column!r} of split {s!r} has type {feature}; expected an Image() feature, '
                "image file paths (strings), image file bytes or encoded images ({'bytes', 'path'} structs). "
                'Pass --image-column NAME to choose another column'
            )
    return dd


def choose_splits(splits, source: str, train_split: str, val_split: str | None) -> str | None:
    """The validation split: ``val_split`` if given, else the first of validation/valid/val present (else None).

    Raises:
        DataError: ``train_split`` or a given ``val_split`` is not among ``splits`` (the message lists them).
    """
    for name in (train_split, val_split):
        if name is not None and name not in splits:
            raise DataError(f'dataset {source} has no split {name!r}; it has splits {list(splits)}')
    if val_split is None:
        val_split = next((s for s in VAL_SPLIT_CANDIDATES if s in splits and s != train_split), None)
    return val_split


def load_train_val(
    dataset: str = 'default',
    *,
    config: str | None = None,
    train_split: str = 'train',
    val_split: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    num_classes: int | None = None,
    max_train_samples: int | None = None,
    max_val_samples: int | None = None,
    embedded_cache: str | os.PathLike = EMBEDDED_CACHE,
) -> tuple[Split, Split, DataSpec]:
    """Open a dataset and return its training and validation splits, validated.

    The validation split picks the best checkpoint and the EMA and gives the reported accuracy, so it is never the
    test split unless asked for by name (then with a warning).

    Args:
        dataset: Where the data is (see ``open_dataset``).
        config: Hub dataset configuration.
        train_split: Split to train on.
        val_split: Split to validate on; ``None`` picks the first of validation/valid/val that exists, else carves
            ``val_fraction`` of ``train_split`` (``Dataset.train_test_split``, stratified by label, seeded by ``seed``).
        val_fraction: Share of ``train_split`` held out when no validation split exists.
        seed: Seed of the carving and of the ``max_*_samples`` subsets.
        image_column: Image column (detected when ``None``).
        label_column: Label column (detected when ``None``).
        num_classes: Classifier width; defaults to the number of class names (or ``max(label) + 1``).
        max_train_samples: Train on a random subset of this size (quick runs).
        max_val_samples: Validate on a random subset of this size.
        embedded_cache: Where ``dataset='default'`` is prepared.

    Returns:
        ``(train, val, spec)``; ``spec.val_source`` says where the validation rows come from.

    Raises:
        DataError: missing splits or columns, labels outside ``[0, num_classes)``.
    """
    dd, source = open_dataset(dataset, config, embedded_cache)
    val_split = choose_splits(dd, source, train_split, val_split)
    image_column, label_column = detect_columns(dd[train_split].features, image_column, label_column)
    splits = [train_split] + ([val_split] if val_split else [])
    for s in splits:
        detect_columns(dd[s].features, image_column, label_column)  # the val split must have the same columns
    for s in splits:
        if len(dd[s]) == 0:
            raise DataError(f'split {s!r} of {source} is empty (0 rows); expected images to train and validate on')
    dd = _prepare_columns(dd, image_column)
    dd, label_names, maps = _encode_labels(dd, splits, label_column)
    parts = [Split(dd[s], np.arange(len(dd[s])), s, image_column, label_column, maps[s]) for s in splits]

    int_labels = label_names is None
    if int_labels:
        top = max(int(p.labels().max(initial=0)) for p in parts)
        label_names = [str(i) for i in range(max(top + 1, num_classes or 0))]
    n = num_classes or len(label_names)
    if n < len(label_names) and not int_labels:
        raise DataError(f'--num-classes {n} is smaller than the {len(label_names)} classes {label_names} of {source}')
    label_names = (label_names + [f'class_{i}' for i in range(len(label_names), n)])[:n]
    for part in parts:
        check_labels(part, n, source)

    train = parts[0]
    if val_split:
        val, val_name, val_source = parts[1], val_split, f'split {val_split!r}'
        if val_split in _TEST_SPLIT_NAMES:
            val_source += ' as asked: it also picks the checkpoint, so it is no held-out test score'
            logger.warning(
                'validating on the %r split as asked: the per-epoch metrics, the best checkpoint, the EMA choice and '
                'the reported accuracy are all chosen on it, so they are no held-out test score (leave --val-split '
                'out to carve a validation share from %r)',
                val_split,
                train_split,
            )
    else:
        tr_rows, va_rows, stratified = carve_validation(train, n, val_fraction, seed)
        train, val = replace(train, rows=tr_rows), replace(train, rows=va_rows)
        val_name = f'{train_split}[val {val_fraction:g}, seed {seed}]'
        val_source = (
            f'validation carved from {train_split}, {val_fraction * 100:g}%, '
            f'{"stratified" if stratified else "not stratified"}, seed {seed}'
        )
    train.rows = _subset(train.rows, max_train_samples, seed)
    val.rows = _subset(val.rows, max_val_samples, seed + 1)

    spec = DataSpec(
        name=_display_name(source),
        path=str(Path(source).resolve()) if Path(source).exists() else None,
        config=config,
        train_split=train_split,
        val_split=val_name,
        image_column=image_column,
        label_column=label_column,
        label_names=label_names,
        num_train=len(train),
        num_val=len(val),
        val_source=val_source,
        fingerprint=getattr(train.dataset, '_fingerprint', None),
    )
    logger.info(
        'data %s: %d train / %d val rows (%s), %d classes, columns image=%r label=%r',
        spec.name,
        spec.num_train,
        spec.num_val,
        spec.val_source,
        len(label_names),
        image_column,
        label_column,
    )
    return train, val, spec


def carve_validation(split: Split, num_classes: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Hold ``fraction`` of ``split`` out for validation with ``Dataset.train_test_split``, stratified by label.

    The split runs on a label-only stand-in in memory, so the rows keep their numbers in the original dataset (read
    errors name them) and no index cache is written beside the user's data. When stratifying is impossible (a class
    with a single row, fewer held-out rows than classes) the share is drawn at random, and the log says so.

    Returns:
        ``(train rows, validation rows, stratified)``, rows sorted.
    """

    if not 0.0 < fraction < 1.0:
        raise DataError(f'--val-fraction must be between 0 and 1 (exclusive), got {fraction}')
    stand_in = Dataset.from_dict(
        {'row': split.rows, 'label': split.labels()},
        features=Features({'row': Value('int64'), 'label': ClassLabel(num_classes=num_classes)}),
    )
    kwargs = {'test_size': fraction, 'seed': seed, 'keep_in_memory': True}
    try:
        parts = stand_in.train_test_split(stratify_by_column='label', **kwargs)
        stratified = True
    except ValueError as e:
        logger.info('validation carve of %r not stratified: %s', split.name, e)
        try:
            parts = stand_in.train_test_split(**kwargs)
        except ValueError as e2:
            raise DataError(
                f'cannot hold {fraction:g} of the {len(split)} rows of split {split.name!r} out for validation: {e2}'
            ) from e2
        stratified = False

    def rows(part) -> np.ndarray:
        return np.sort(np.asarray(part.with_format('numpy')[:]['row'], dtype=np.int64))

    return rows(parts['train']), rows(parts['test']), stratified


def load_eval_split(
    dataset: Any,
    split: str = 'test',
    *,
    config: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    embedded_cache: str | os.PathLike = EMBEDDED_CACHE,
) -> tuple[Split, list[str] | None, str]:
    """One split of a dataset for evaluation.

    Args:
        dataset: A source accepted by ``open_dataset``, or an already loaded ``Dataset`` / ``DatasetDict``.
        split: Split name.
        config: Hub dataset configuration.
        image_column: Image column (detected when ``None``).
        label_column: Label column (detected when ``None``).
        max_samples: Evaluate a random subset of this size.
        seed: Seed of that subset.
        embedded_cache: Where ``dataset='default'`` is prepared.

    Returns:
        ``(split, class names from the dataset or None, display name)``.
    """

    if isinstance(dataset, datasets.Dataset):
        dd, source = datasets.DatasetDict({split: dataset}), dataset.info.dataset_name or 'dataset'
    elif isinstance(dataset, datasets.DatasetDict):
        dd, source = dataset, 'dataset'
    else:
        dd, source = open_dataset(str(dataset), config, embedded_cache)
    if split not in dd:
        raise DataError(f'dataset {source} has no split {split!r}; it has splits {list(dd)}')
    image_column, label_column = detect_columns(dd[split].features, image_column, label_column)
    if len(dd[split]) == 0:
        raise DataError(f'split {split!r} of {source} is empty (0 rows); expected images to evaluate on')
    dd = _prepare_columns(datasets.DatasetDict({split: dd[split]}), image_column)
    dd, names, _ = _encode_labels(dd, [split], label_column)
    part = Split(dd[split], np.arange(len(dd[split])), split, image_column, label_column)
    part.rows = _subset(part.rows, max_samples, seed)
    return part, names, _display_name(source)


def _display_name(source: str) -> str:
    path = Path(source)
    return path.name if path.exists() else source


# ----------------------------------------------------------------------------------------------------------------------
# Images to tensors


def to_model_mode(image, in_chans: int):
    """Convert a PIL image to what a model with ``in_chans`` channels eats: ``L`` for 1, ``RGB`` for 3.

    Transparent images are composited onto white first: the colour under fully transparent pixels is arbitrary
    (often black), and a plain ``convert('RGB')`` would expose it. Deep grayscale images (32-bit ``I``, every 16-bit
    ``I;16*`` byte order, float ``F``) have their own range stretched to 0..255 rather than clipped at 255 (so a
    constant image becomes black). A float image with NaN or infinite pixels is refused (``DataError``; the dataset
    wraps it in an error naming the row) rather than guessed at. Modes Pillow cannot convert directly (``LAB`` to
    ``L``, for one) go through ``RGB``.

    Raises:
        DataError: NaN or infinite pixels.
    """

    target = 'L' if in_chans == 1 else 'RGB'
    if image.mode in ('RGBA', 'LA', 'PA') or (image.mode == 'P' and 'transparency' in image.info):
        rgba = image.convert('RGBA')
        image = Image.alpha_composite(Image.new('RGBA', rgba.size, (255, 255, 255, 255)), rgba)
    elif image.mode in ('I', 'F') or image.mode.startswith('I;16'):
        arr = np.asarray(image, dtype=np.float64)  # (H, W); numpy reads each byte order
        finite = np.isfinite(arr)
        if not finite.all():
            raise DataError(
                f'{int((~finite).sum())} of {arr.size} pixels of this {image.mode} image are NaN or infinite; '
                'expected finite pixel values (clean or drop the image)'
            )
        lo, hi = float(arr.min()), float(arr.max())
        image = Image.fromarray(np.uint8(np.round((arr - lo) * (255.0 / max(hi - lo, 1e-12)))), mode='L')
    try:
        return image.convert(target)
    except ValueError:  # no direct conversion (e.g. LAB -> L): through RGB, which every mode converts to
        return image.convert('RGB').convert(target)


def model_data_config(model: torch.nn.Module, img_size: int | None = None, in_chans: int | None = None) -> dict:
    """timm's data config for ``model``, fixed up for the channels it actually takes.

    ``resolve_data_config`` keeps a 3-channel ``input_size``/``mean``/``std`` for a model built with ``in_chans=1``;
    the 3-element normalisation would silently broadcast a grayscale image to 3 channels, and RandAugment's fill
    colour would be an RGB tuple. For 1 channel the mean and std become their averages.
    """

    in_chans = in_chans or getattr(model, 'in_chans', None) or _first_conv_in_channels(model) or 3
    if in_chans not in (1, 3):
        raise DataError(f'images can feed models with in_chans 1 or 3, not {in_chans}')
    args = {'img_size': img_size} if img_size else {}
    cfg = resolve_data_config(args=args, model=model)
    cfg['input_size'] = (in_chans, *cfg['input_size'][1:])
    for key in ('mean', 'std'):
        cfg[key] = for_channels(cfg[key], in_chans)
    return cfg


def _first_conv_in_channels(model: torch.nn.Module) -> int | None:
    first_conv = getattr(model, 'pretrained_cfg', {}).get('first_conv')
    if first_conv:
        try:
            return model.get_submodule(first_conv).weight.shape[1]
        except AttributeError:
            return None
    return None


class ExampleTransform:
    """Batch transform for ``Dataset.with_transform``: image column -> ``pixel_values``, label column -> ``label``.

    A class rather than a closure so DataLoader workers started with ``spawn`` can pickle it.
    """

    def __init__(self, transform, image_column: str, label_column: str, in_chans: int):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.in_chans = in_chans

    def __call__(self, batch: dict) -> dict:
        images = [self.transform(to_model_mode(im, self.in_chans)) for im in batch[self.image_column]]
        return {'pixel_values': images, 'label': batch[self.label_column]}


class ImageClassificationDataset(torch.utils.data.Dataset):
    """A ``Split`` as a torch dataset of ``(pixel_values (C, H, W), label)``; read errors name the original row.

    Decoding is lazy (``with_transform``), and ``__getitems__`` lets the DataLoader fetch a whole batch in one call.
    """

    def __init__(self, split: Split, transform, in_chans: int, source: str = 'dataset'):
        self.split = split
        self.source = source
        columns = [split.image_column, split.label_column]
        fn = ExampleTransform(transform, split.image_column, split.label_column, in_chans)
        self.data = split.dataset.with_transform(fn, columns=columns)

    def __len__(self) -> int:
        return len(self.split)

    def _read_error(self, row: int, e: Exception) -> DataError:
        reason = (str(e).strip().splitlines() or [''])[0]
        path = self._image_path(row)
        where = f' (file {path})' if path else ''
        return DataError(
            f'cannot read or transform the image in row {row}{where} of split {self.split.name!r} of '
            f'{self.source}: {type(e).__name__}: {reason}'
        )

    def _image_path(self, row: int) -> str | None:
        """The file the image of ``row`` came from, when the dataset recorded one (imagefolder does)."""
        try:
            column = self.split.dataset.select_columns([self.split.image_column]).with_format('arrow')
            value = column[row][self.split.image_column].to_pylist()[0]
        except Exception:  # only used to improve an error message
            return None
        return value.get('path') if isinstance(value, dict) else None

    def _label(self, y: Any) -> int:
        y = int(y)
        return int(map_labels(np.array([y]), self.split.label_map)[0]) if self.split.label_map is not None else y

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.split.rows[i])
        try:
            ex = self.data[row]
        except Exception as e:
            raise self._read_error(row, e) from None  # the message says it all; no worker-traceback chain
        return ex['pixel_values'], self._label(ex['label'])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        rows = [int(self.split.rows[i]) for i in indices]
        try:
            batch = self.data[rows]
        except Exception:
            return [self[i] for i in indices]  # one at a time, to find and name the bad row
        return list(zip(batch['pixel_values'], (self._label(y) for y in batch['label']), strict=True))


# ----------------------------------------------------------------------------------------------------------------------
# What hybrid-zoo prepare-data runs


def prepare_data(
    which: str = 'all',
    out_dir: str | os.PathLike = EMBEDDED_CACHE,
    fashion_mnist_dir: str | os.PathLike = FASHION_MNIST_DIR,
    overwrite: bool = False,
    shards: str | None = None,
    shard_size: int = 1000,
    source: str | None = None,
    push_to: str | None = None,
    private: bool = False,
) -> list[str]:
    """Write the embedded datasets (``which``: 'all', 'fashion-mnist', 'digits' or 'default') under ``out_dir``, or,
    with ``shards`` ('parquet' or 'webdataset'), them or ``source`` as shard folders, pushed to ``push_to`` when given.

    Returns:
        The folders written.

    Raises:
        DataError: ``source`` or ``push_to`` without ``shards``, ``shard_size`` below 1, or unreadable data.
    """
    out, fm_dir = Path(out_dir), Path(fashion_mnist_dir)
    if source and not shards:
        raise DataError(f'--source {source} needs --shards parquet|webdataset (it converts a dataset into shards)')
    if push_to and not shards:
        raise DataError(f'--push-to {push_to} needs --shards parquet|webdataset (what is pushed is the shard folder)')
    if shard_size < 1:
        raise DataError(f'--shard-size must be an integer >= 1, got {shard_size}')
    if which == 'default':
        which = 'fashion-mnist' if fashion_mnist_available(fm_dir) else 'digits'
    jobs = []
    if source:
        which = 'none'  # the given dataset is sharded; no embedded one is prepared
    if which in ('fashion-mnist', 'all'):
        if which == 'all' and not fashion_mnist_available(fm_dir):
            logger.warning(
                'Fashion-MNIST skipped: its IDX files are not in %s (apt-get install -y dataset-fashion-mnist, or '
                'pass --fashion-mnist-dir)',
                fm_dir,
            )
        else:
            jobs.append(('fashion_mnist', lambda path: prepare_fashion_mnist(path, fm_dir)))
    if which in ('digits', 'all'):
        jobs.append(('digits', prepare_digits))
    written = [_prepare_once(name, prepare, out / name, overwrite) for name, prepare in jobs]
    if shards:
        sources = [source] if source else written
        written = [_write_shard_folder(src, out, shards, shard_size, push_to, private) for src in sources]
    return written


def _write_shard_folder(
    source: str, out: Path, shards: str, shard_size: int, push_to: str | None, private: bool
) -> str:
    """``source`` as ``shards`` shards in ``<out>/<name>-<format>``, pushed as a dataset repo to ``push_to`` if given."""
    from hybrid_zoo.train.shards import write_shards

    dd, display = open_dataset(source)
    first = next(iter(dd.values()))
    image_column, label_column = detect_columns(first.features)
    dd = _prepare_columns(dd, image_column)
    if not isinstance(first.features[label_column], ClassLabel):
        dd = dd.class_encode_column(label_column)
    name = _display_name(display).replace('/', '_')
    folder = write_shards(dd, out / f'{name}-{shards}', shards, shard_size, name, image_column, label_column)
    if push_to:
        api = HfApi()
        api.create_repo(push_to, repo_type='dataset', private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=push_to,
            repo_type='dataset',
            commit_message=f'{shards} shards of {name} (hybrid-zoo prepare-data)',
        )
        logger.info('pushed %s to the dataset repo %s (%s)', folder, push_to, constants.ENDPOINT)
    return str(folder)
