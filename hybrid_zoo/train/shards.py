"""Write an image-classification dataset as sharded files that ``datasets`` streams: parquet or webdataset tars.

Layout of the folder (the Hub's own conventions, so the same folder works locally and pushed as a dataset repo)::

    README.md                               dataset card: YAML ``configs`` (the data files of each split) and
                                            ``dataset_info`` (features: ``image`` + ``label`` ClassLabel with the
                                            class names; the number of examples of each split)
    data/<split>-00000-of-00004.parquet     parquet: columns ``image`` ({bytes, path}) and ``label`` (int64)
    data/<split>-00000-of-00004.tar         webdataset: members ``<key>.png`` and ``<key>.cls`` (the label, decimal)

``load_dataset(folder_or_repo, streaming=True)`` reads the card, so both formats stream with the same label names
(webdataset's columns are ``png`` and ``cls``; the card names them as features). The folder is written beside its
destination and renamed into place: a kill never leaves half a shard set. ``.hybrid_zoo_shards.json`` records what was
written (the source, the format, every file's size and sha256): a folder is only ever replaced when every file in it
is one the writer recorded, so nothing a user put there is deleted, and the shards of one source never silently
replace those of another. ``push_shards`` publishes a shard folder as a dataset repo in one commit that also deletes
the shards an earlier push left and this one does not write.
"""

from __future__ import annotations

import fnmatch
import io
import logging
import math
import os
import re
import shutil
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import ClassLabel, Dataset, DatasetDict
from datasets import Image as HFImage
from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HFValidationError

from hybrid_zoo.atomic import read_json, replace_dir, temp_dir_beside, write_atomic, write_json_atomic
from hybrid_zoo.factory import sha256_file
from hybrid_zoo.hub.client import HubError, _network_error, _validate_repo_id, check_write_access
from hybrid_zoo.logs import progress
from hybrid_zoo.train.checks import DataError

logger = logging.getLogger('hybrid_zoo.train.shards')

FORMATS = ('parquet', 'webdataset')
_EXT = {'parquet': 'parquet', 'webdataset': 'tar'}
# webdataset member names are <key>.<field>: the image is stored as PNG, the label as its decimal class index
WDS_IMAGE, WDS_LABEL = 'png', 'cls'
MANIFEST = '.hybrid_zoo_shards.json'  # what write_shards wrote: never uploaded, only read to know what is its own
SHARD_FILE = re.compile(r'data/[^/]+-\d{5}-of-\d{5}\.(parquet|tar)')  # a shard file as shard_name spells it


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
    *,
    source: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write every split of ``dataset`` as ``fmt`` shards of ``shard_size`` examples (the last may be smaller).

    Args:
        dataset: Splits with an image column and a ``ClassLabel`` label column (its names are kept).
        out_dir: The shard folder; replaced atomically when it exists.
        fmt: ``'parquet'`` or ``'webdataset'``.
        shard_size: Examples per shard.
        name: Title of the dataset card (default: the folder name).
        image_column: The image column of ``dataset``.
        label_column: The label column of ``dataset``.
        source: What the shards are made of (recorded; an existing folder of another source is not replaced).
        overwrite: Replace a folder this writer made from another source.

    Returns:
        ``out_dir``.

    Raises:
        DataError: ``out_dir`` holds files this writer did not write, or the shards of another source (see
            ``check_replaceable``).
    """
    if fmt not in FORMATS:
        raise ValueError(f'shard format must be one of {FORMATS}, got {fmt!r}')
    if shard_size < 1:
        raise ValueError(f'shard size must be >= 1 example, got {shard_size}')
    out = Path(out_dir)
    check_replaceable(out, source, overwrite)
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
            for row in progress(
                _rows(ds, image_column, label_column), total=len(ds), desc=f'{split} shards', unit='img'
            ):
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
        written = {f: {'size': (tmp / f).stat().st_size, 'sha256': sha256_file(tmp / f)} for f in _files(tmp)}
        write_json_atomic(tmp / MANIFEST, {'source': source, 'format': fmt, 'files': written})
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


def _files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob('*')) if not p.is_dir()]


def check_replaceable(out: Path, source: str | None, overwrite: bool) -> None:
    """Refuse to replace ``out`` unless every file in it is one ``write_shards`` wrote there, unchanged.

    Raises:
        DataError: ``out`` is a file; it holds files the writer did not write (or changed since), which replacing
            it would delete (they are named); or it holds the shards of another source and ``overwrite`` is off.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f'{out} is a file; expected a folder to write the shards into')
    files = _files(out)
    if not files:
        return
    try:
        manifest = read_json(out / MANIFEST)
    except (OSError, ValueError):  # missing, or not the JSON the writer writes
        manifest = None
    recorded = manifest.get('files') if isinstance(manifest, dict) else None
    if not isinstance(recorded, dict):
        raise DataError(
            f'{out} exists and was not written by prepare-data --shards (no readable {MANIFEST}): it holds {files[:8]}'
            f'{" ..." if len(files) > 8 else ""}. Writing the shards replaces the folder, which would delete them: '
            'move them elsewhere, or choose another --out-dir'
        )
    foreign = [
        f
        for f in files
        if f != MANIFEST
        and (
            f not in recorded
            or (out / f).stat().st_size != recorded[f].get('size')
            or sha256_file(out / f) != recorded[f].get('sha256')
        )
    ]
    if foreign:
        raise DataError(
            f'{out} holds files prepare-data --shards did not write there (or that changed since): {foreign[:8]}'
            f'{" ..." if len(foreign) > 8 else ""}. Writing the shards replaces the folder, which would delete them: '
            'move them elsewhere, or choose another --out-dir'
        )
    if manifest.get('source') != source and not overwrite:
        raise DataError(
            f'{out} holds the shards of {manifest.get("source")!r}, and this run shards {source!r} to the same folder '
            'name: pass --overwrite to replace them, or choose another --out-dir'
        )


def check_push_target(repo_id: str, api: HfApi | None = None) -> HfApi:
    """Check ``repo_id`` and the token before any work: a valid ``org/name`` the token may write to.

    Raises:
        HubError: an invalid id (no namespace, no name, characters the Hub refuses), no token, a read-only token,
            a namespace the token cannot write to, or a Hub that cannot be reached.
    """
    try:
        _validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f'--push-to {repo_id!r} is not a dataset repo id: {e}; expected org/name') from None
    api = api or HfApi()
    check_write_access(api, repo_id)
    return api


def push_shards(folder: Path, repo_id: str, *, private: bool, message: str, api: HfApi | None = None) -> CommitInfo:
    """Publish a shard folder as the dataset repo ``repo_id`` in one commit.

    The commit adds every file of the folder (but the manifest) and deletes the shard files (``data/*-NNNNN-of-
    NNNNN.parquet|tar``) an earlier push left that this one does not write, so a push with another shard size or
    format never leaves the old shards in a split. Other files of the repo are kept; one under ``data/`` that the
    card's split patterns would read is refused rather than deleted.

    Raises:
        HubError: the Hub refused or could not be reached (nothing was committed), or the repo holds data files
            this writer did not write that would be read as part of a split.
    """
    api = check_push_target(repo_id, api)
    upload = {f: folder / f for f in _files(folder) if f != MANIFEST}
    fmt = read_json(folder / MANIFEST)['format']
    patterns = [f'data/*-*.{_EXT[f]}' for f in FORMATS]
    try:
        api.create_repo(repo_id, repo_type='dataset', private=private, exist_ok=True)
        head = api.dataset_info(repo_id)
        existing = [s.rfilename for s in head.siblings or []]
        stale = [f for f in existing if SHARD_FILE.fullmatch(f) and f not in upload]
        foreign = [
            f
            for f in existing
            if f.startswith('data/') and not SHARD_FILE.fullmatch(f) and any(fnmatch.fnmatch(f, p) for p in patterns)
        ]
        if foreign:
            raise HubError(
                f'dataset repo {repo_id} holds data files prepare-data did not write: {foreign[:8]}; the card of '
                f'this push reads every data/<split>-*.{_EXT[fmt]} file as part of a split, so they would be mixed '
                'in: remove or rename them in the repo first, or push to another repo'
            )
        ops = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(p)) for f, p in upload.items()]
        ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        # parent_commit: a concurrent push makes this one fail instead of silently interleaving
        info = api.create_commit(repo_id, ops, repo_type='dataset', commit_message=message, parent_commit=head.sha)
    except HubError:
        raise
    except Exception as e:
        raise _network_error(api, repo_id, e, 'uploading') from None
    logger.info(
        'pushed %s to the dataset repo %s (%d files, %d old shards deleted)', folder, repo_id, len(upload), len(stale)
    )
    return info
