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

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as HFImage
from PIL import Image
from timm.data import resolve_data_config

from hybrid_zoo.normalization import for_channels
from hybrid_zoo.train.checks import DataError, check_label_range, image_error, label_array
from hybrid_zoo.train.embedded import (  # noqa: F401 (re-exported: the embedded datasets' home is embedded.py)
    EMBEDDED_CACHE,
    FASHION_MNIST_DIR,
    fashion_mnist_available,
    prepare_default,
    prepare_digits,
    prepare_fashion_mnist,
    prepare_once,
    read_idx,
    save_dataset,
)
from hybrid_zoo.train.shards import check_push_target, push_shards, write_shards
from hybrid_zoo.train.sources import create_source, looks_like_path  # noqa: F401 (re-exported)

logger = logging.getLogger('hybrid_zoo.train.data')  # not __name__: that is '__main__' under python -m

# names tried, in order, when no validation split is given; never 'test': the validation split picks the checkpoint
VAL_SPLIT_CANDIDATES = ('validation', 'valid', 'val')
_TEST_SPLIT_NAMES = ('test', 'testing')
MAX_INFERRED_CLASSES = 100_000  # integer labels without --num-classes: a larger one is a mistake, not a class
# a --dataset ending so is a file, never a Hub id
_DATA_FILE_SUFFIXES = ('.parquet', '.arrow', '.csv', '.json', '.jsonl', '.txt', '.zip', '.tar', '.gz', '.tgz')
_IMAGE_NAMES = ('image', 'img', 'images', 'pixel_values', 'picture', 'photo')
_LABEL_NAMES = ('label', 'labels', 'target', 'targets', 'class', 'fine_label', 'category')


# ----------------------------------------------------------------------------------------------------------------------
# Opening any dataset


def open_dataset(
    source: str, config: str | None = None, embedded_cache: str | os.PathLike = EMBEDDED_CACHE
) -> tuple[Any, str]:
    """Open a dataset, map-style, from any place ``sources.create_source`` knows.

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
    src = create_source(source, config, embedded_cache)
    return src.load(), src.path or source


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
        labels = label_array(column[self.rows], lambda i: f'row {int(self.rows[i])} of split {self.name!r}')
        return map_labels(labels, self.label_map)


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
                present = [None if v is None else 0 for v in column.to_pylist()]  # the names are checked below
                label_array(present, lambda i, s=s: f'row {i} of split {s!r}')  # raises, naming the first None
            values.update(unique)
        names = sorted(values)
        class_label = ClassLabel(names=names)
        for s in splits:
            dd[s] = dd[s].cast_column(label_column, class_label)
        return dd, names, maps
    return dd, None, maps


def check_labels(split: Split, num_classes: int, source: str) -> None:
    """Raise a ``DataError`` naming the first offending row if any label is outside ``[0, num_classes)``."""
    check_label_range(
        split.labels(), num_classes, lambda i: f'row {int(split.rows[i])} of split {split.name!r} of {source}'
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
        if num_classes is None and top >= MAX_INFERRED_CLASSES:
            raise DataError(
                f'the largest label of {source} is {top}, which would make {top + 1} classes; expected class indices '
                f'below {MAX_INFERRED_CLASSES} when --num-classes is not given (pass --num-classes N for more classes, '
                'or fix the labels)'
            )
        label_names = [str(i) for i in range(num_classes or top + 1)]  # a given width: larger labels are refused
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
        path = self._image_path(row)
        where = f' (file {path})' if path else ''
        return image_error(f'row {row}{where} of split {self.split.name!r} of {self.source}', e)

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
        DataError: ``source`` or ``push_to`` without ``shards``, ``push_to`` with more than one dataset (each push
            replaces the repo's shards), ``shard_size`` below 1, or unreadable data.
    """
    out, fm_dir = Path(out_dir), Path(fashion_mnist_dir)
    if source and not shards:
        raise DataError(f'--source {source} needs --shards parquet|webdataset (it converts a dataset into shards)')
    if push_to and not shards:
        raise DataError(f'--push-to {push_to} needs --shards parquet|webdataset (what is pushed is the shard folder)')
    if shard_size < 1:
        raise DataError(f'--shard-size must be an integer >= 1, got {shard_size}')
    if out.exists() and not out.is_dir():
        raise DataError(f'--out-dir {out} is a file; expected a folder (new, or one prepare-data wrote before)')
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
    if push_to and len(jobs) > 1:
        # each push replaces the repo's shards with its own (a rerun with another --shard-size leaves no stale
        # ones), so a second dataset pushed to the same repo would delete the first one's
        names = ' and '.join(name for name, _ in jobs)
        raise DataError(
            f'--push-to {push_to} takes one dataset, but --which {which} prepares {len(jobs)}: {names}, and each push '
            'replaces the shards of the one before; push them one at a time, each to its own repo (--which '
            'fashion-mnist --push-to ORG/NAME, then --which digits --push-to ORG/OTHER)'
        )
    if push_to:
        check_push_target(push_to)  # an unusable repo id or token fails before any work
    written = [prepare_once(name, prepare, out / name, overwrite) for name, prepare in jobs]
    if shards:
        sources = [source] if source else written
        written = [
            _write_shard_folder(src, out, shards=shards, shard_size=shard_size, push_to=push_to, private=private,
                                overwrite=overwrite)
            for src in sources
        ]  # fmt: skip
    return written


def _write_shard_folder(
    source: str, out: Path, *, shards: str, shard_size: int, push_to: str | None, private: bool, overwrite: bool
) -> str:
    """``source`` as ``shards`` shards in ``<out>/<name>-<format>``, pushed as a dataset repo to ``push_to`` if given."""
    dd, display = open_dataset(source)
    first = next(iter(dd.values()))
    image_column, label_column = detect_columns(first.features)
    dd = _prepare_columns(dd, image_column)
    if not isinstance(first.features[label_column], ClassLabel):
        dd = dd.class_encode_column(label_column)
    name = _display_name(display).replace('/', '_')
    folder = write_shards(
        dd,
        out / f'{name}-{shards}',
        shards,
        shard_size,
        name,
        image_column,
        label_column,
        source=str(Path(source).resolve()) if Path(source).exists() else source,
        overwrite=overwrite,
    )
    if push_to:
        push_shards(folder, push_to, private=private, message=f'{shards} shards of {name} (hybrid-zoo prepare-data)')
    return str(folder)
