"""Write an image-classification dataset as sharded files that ``datasets`` streams: parquet or webdataset tars.

Layout of the folder (the Hub's own conventions, so the same folder works locally and pushed as a dataset repo)::

    README.md                               dataset card: YAML ``configs`` (the data files of each split) and
                                            ``dataset_info`` (features: ``image`` + ``label`` ClassLabel with the
                                            class names; the number of examples of each split)
    data/<split>-00000-of-00004.parquet     parquet: columns ``image`` ({bytes, path}) and ``label`` (int64)
    data/<split>-00000-of-00004.tar         webdataset: members ``<key>.png`` and ``<key>.cls`` (the label, decimal)

``load_dataset(folder_or_repo, streaming=True)`` reads the card, so both formats stream with the same label names
(webdataset's columns are ``png`` and ``cls``; the card names them as features). The folder is written beside its
destination and renamed into place: a kill never leaves half a shard set.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as HFImage

from hybrid_zoo.atomic import replace_dir, temp_dir_beside, write_atomic

logger = logging.getLogger('hybrid_zoo.train.shards')

FORMATS = ('parquet', 'webdataset')
_EXT = {'parquet': 'parquet', 'webdataset': 'tar'}
# webdataset member names are <key>.<field>: the image is stored as PNG, the label as its decimal class index
WDS_IMAGE, WDS_LABEL = 'png', 'cls'


def shard_name(split: str, index: int, count: int, fmt: str) -> str:
    """``data/<split>-00003-of-00008.<ext>``: the Hub's split pattern, which ``datasets`` recognises."""
    return f'data/{split}-{index:05d}-of-{count:05d}.{_EXT[fmt]}'


def _png_bytes(value) -> bytes:
    """The image of one row as PNG bytes (re-encoded unless it already is a PNG)."""
    from PIL import Image

    if isinstance(value, dict) and value.get('bytes') and value['bytes'][:8] == b'\x89PNG\r\n\x1a\n':
        return value['bytes']
    if isinstance(value, dict):
        image = Image.open(io.BytesIO(value['bytes'])) if value.get('bytes') else Image.open(value['path'])
    else:
        image = value
    buf = io.BytesIO()
    image.save(buf, format='PNG')
    return buf.getvalue()


def _rows(split: Dataset, image_column: str, label_column: str) -> Iterable[tuple[bytes, int]]:
    raw = split.cast_column(image_column, HFImage(decode=False))
    for row in raw.select_columns([image_column, label_column]):
        yield _png_bytes(row[image_column]), int(row[label_column])


def _write_parquet(path: Path, rows: list[tuple[bytes, int]]) -> None:
    table = pa.table(
        {
            'image': pa.array(
                [{'bytes': b, 'path': None} for b, _ in rows],
                type=pa.struct([('bytes', pa.binary()), ('path', pa.string())]),
            ),
            'label': pa.array([y for _, y in rows], type=pa.int64()),
        }
    )
    pq.write_table(table, path)


def _write_tar(path: Path, rows: list[tuple[bytes, int]], split: str, start: int) -> None:
    with tarfile.open(path, 'w') as tar:
        for i, (png, label) in enumerate(rows):
            key = f'{split}_{start + i:08d}'
            for field, data in ((WDS_IMAGE, png), (WDS_LABEL, str(label).encode())):
                info = tarfile.TarInfo(f'{key}.{field}')
                info.size = len(data)
                info.mtime = 0  # byte-identical shards from identical data
                tar.addfile(info, io.BytesIO(data))


def dataset_card(
    name: str,
    label_names: list[str],
    split_sizes: dict[str, int],
    split_files: dict[str, list[str]],
    fmt: str,
    split_bytes: dict[str, int] | None = None,
) -> str:
    """The README.md of a shard folder: YAML front matter that ``datasets`` reads, then a short description."""
    image, label = ('image', 'label') if fmt == 'parquet' else (WDS_IMAGE, WDS_LABEL)
    features = [
        {'name': image, 'dtype': 'image'},
        {'name': label, 'dtype': {'class_label': {'names': {str(i): n for i, n in enumerate(label_names)}}}},
    ]
    meta = {
        'configs': [
            {
                'config_name': 'default',
                'data_files': [{'split': s, 'path': f'data/{s}-*.{_EXT[fmt]}'} for s in split_files],
            }
        ],
        'dataset_info': {
            'features': features,
            'splits': [
                {'name': s, 'num_bytes': (split_bytes or {}).get(s, 0), 'num_examples': n}
                for s, n in split_sizes.items()
            ],
        },
        'task_categories': ['image-classification'],
    }
    lines = [
        '---',
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        '---',
        f'# {name}',
        '',
        f'{sum(split_sizes.values())} images in {fmt} shards, {len(label_names)} classes '
        f'({", ".join(label_names)}). Written by `hybrid-zoo prepare-data --shards`.',
        '',
        '| split | examples | shards |',
        '|---|---|---|',
        *[f'| {s} | {split_sizes[s]} | {len(split_files[s])} |' for s in split_files],
        '',
    ]
    return '\n'.join(lines)


def write_shards(
    dataset: DatasetDict,
    out_dir: str | os.PathLike,
    fmt: str = 'parquet',
    shard_size: int = 1000,
    name: str | None = None,
    image_column: str = 'image',
    label_column: str = 'label',
) -> Path:
    """Write every split of ``dataset`` as ``fmt`` shards of ``shard_size`` examples (the last may be smaller).

    Args:
        dataset: Splits with an image column and a ``ClassLabel`` label column (its names are kept).
        out_dir: The shard folder; replaced atomically when it exists.
        fmt: ``'parquet'`` or ``'webdataset'``.
        shard_size: Examples per shard.
        name: Title of the dataset card (default: the folder name).

    Returns:
        ``out_dir``.
    """
    if fmt not in FORMATS:
        raise ValueError(f'shard format must be one of {FORMATS}, got {fmt!r}')
    if shard_size < 1:
        raise ValueError(f'shard size must be >= 1 example, got {shard_size}')
    out = Path(out_dir)
    first = next(iter(dataset.values()))
    feature = first.features.get(label_column)
    if not isinstance(feature, ClassLabel):
        raise ValueError(
            f'expected a ClassLabel column {label_column!r} (its class names go into the shards), got {feature}'
        )
    tmp = temp_dir_beside(out)
    try:
        (tmp / 'data').mkdir(parents=True)
        sizes, files = {}, {}
        for split, ds in dataset.items():
            count = max(1, math.ceil(len(ds) / shard_size))
            files[split], rows = [], []
            index = 0
            for row in _rows(ds, image_column, label_column):
                rows.append(row)
                if len(rows) == shard_size:
                    files[split].append(_flush(tmp, split, index, count, fmt, rows, index * shard_size))
                    index, rows = index + 1, []
            if rows or not files[split]:
                files[split].append(_flush(tmp, split, index, count, fmt, rows, index * shard_size))
            sizes[split] = len(ds)
        nbytes = {s: sum((tmp / f).stat().st_size for f in fs) for s, fs in files.items()}
        card = dataset_card(name or out.name, list(feature.names), sizes, files, fmt, nbytes)
        write_atomic(tmp / 'README.md', card.encode())
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info('%s shards written to %s: %s', fmt, out, {s: len(f) for s, f in files.items()})
    return out


def _flush(root: Path, split: str, index: int, count: int, fmt: str, rows: list, start: int) -> str:
    rel = shard_name(split, index, count, fmt)
    if fmt == 'parquet':
        _write_parquet(root / rel, rows)
    else:
        _write_tar(root / rel, rows, split, start)
    return rel


def shard_counts(folder: str | os.PathLike) -> dict[str, int]:
    """Examples per split of a shard folder, from its card (what ``write_shards`` recorded)."""
    text = (Path(folder) / 'README.md').read_text()
    meta = yaml.safe_load(text.split('---')[1])
    return {s['name']: int(s['num_examples']) for s in meta['dataset_info']['splits']}
