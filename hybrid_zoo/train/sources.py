"""Where data comes from: the one place that decides what ``--dataset`` names, for map-style and streamed reading.

``create_source`` (in the spirit of timm's ``create_reader``) turns the user's string into one ``Source`` kind:

====================  =============================================================================================
``'default'``         ``EmbeddedSource``: the embedded data, prepared when first read, then a saved folder
a ``save_to_disk``    ``SavedSource``: ``load_from_disk``; streamed through ``to_iterable_dataset``
other folders         ``FolderSource``: what ``load_dataset`` understands (``imagefolder``, shards with a card)
files or a glob       ``FilesSource``: parquet files (map-style splits by file name), parquet or webdataset shards
``org/name``          ``HubSource``: a Hub dataset repo
====================  =============================================================================================

A new kind is one class with ``load`` (map-style ``DatasetDict``), ``stream`` (``Streams``) and ``wants_streaming``,
and one branch in ``create_source``.

Streamed parquet and webdataset shards are read shard by shard (``ShardReader``), so every example carries its
shard and row (``SHARD_KEY``, ``ROW_KEY``) and a bad one is named; before anything streams, local shards and every
parquet footer (remote: ranged reads of the footer only, through ``HfFileSystem``) are checked, and the footers'
row counts give the size of a split whose dataset card does not state it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import DatasetDict, Features, IterableDataset, Value, load_dataset, load_dataset_builder, load_from_disk
from datasets import Image as HFImage
from datasets.data_files import DataFilesDict, get_data_patterns
from huggingface_hub import HfApi, HfFileSystem, constants
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

from hybrid_zoo.atomic import recover_dir
from hybrid_zoo.train.checks import DataError, first_line
from hybrid_zoo.train.embedded import EMBEDDED_CACHE, default_name, prepare_default

logger = logging.getLogger('hybrid_zoo.train.data')

# a --dataset ending so is a file, never a Hub id
DATA_FILE_SUFFIXES = ('.parquet', '.arrow', '.csv', '.json', '.jsonl', '.txt', '.zip', '.tar', '.gz', '.tgz')
SHARD_BUILDERS = {'.parquet': 'parquet', '.tar': 'webdataset'}
STREAM_ABOVE_BYTES = 8 << 30  # a Hub dataset repo with more data than this streams unless --streaming is given
SHARD_KEY, ROW_KEY = '__shard__', '__row__'  # where a streamed example of a shard set comes from


def has_glob(source: str) -> bool:
    return any(c in source for c in '*?[')


def looks_like_path(source: str) -> bool:
    """Whether ``--dataset`` names a local path rather than a Hub id (``name`` or ``org/name``).

    Paths start with ``.``, ``/`` or ``~``, have more than one separator, end with a data file extension or hold
    glob characters; such a source that does not exist is a typo, not a dataset to look up on the Hub.
    """
    if source.startswith(('.', '/', '~')) or has_glob(source):
        return True
    if source.count('/') > 1 or (os.sep != '/' and os.sep in source):
        return True
    return source.lower().endswith(DATA_FILE_SUFFIXES)


def is_saved_dataset(path: Path) -> bool:
    return (path / 'dataset_dict.json').is_file() or (path / 'state.json').is_file()


@dataclass
class Streams:
    """The splits of a source as ``IterableDataset`` s (images still encoded) and what is known of their sizes."""

    splits: dict[str, IterableDataset]
    sizes: dict[str, int] = field(default_factory=dict)  # examples per split, from the card, the data or the footers


# ----------------------------------------------------------------------------------------------------------------------
# The kinds of source


class Source:
    """A place data comes from. ``name`` is shown in logs and cards; ``path`` is the local folder, if any."""

    name: str
    path: str | None = None

    def load(self) -> DatasetDict:
        """Every split, map-style."""
        raise NotImplementedError

    def stream(self) -> Streams:
        """Every split, streamed."""
        raise NotImplementedError

    def wants_streaming(self) -> bool:
        """Whether the data should stream without being asked (webdataset shards only stream)."""
        return False


class EmbeddedSource(Source):
    """The embedded demo data (``--dataset default``), prepared under ``cache`` the first time it is read."""

    def __init__(self, cache: str | os.PathLike) -> None:
        self.cache, self.name = cache, default_name()
        self.path = str(Path(cache) / self.name)

    def _saved(self) -> SavedSource:
        _, prepared = prepare_default(self.cache)
        return SavedSource(Path(prepared))

    def load(self) -> DatasetDict:
        return self._saved().load()

    def stream(self) -> Streams:
        return self._saved().stream()


class SavedSource(Source):
    """A ``save_to_disk`` folder (the embedded data is one)."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.folder, self.name, self.path = path, name or path.name, str(path)

    def load(self) -> DatasetDict:
        loaded = _local(self.path, lambda: load_from_disk(self.path), saved=self.folder)
        return loaded if isinstance(loaded, DatasetDict) else DatasetDict({'train': loaded})

    def stream(self) -> Streams:
        dd = self.load()
        splits = {s: d.to_iterable_dataset(num_shards=min(16, max(1, len(d)))) for s, d in dd.items()}
        return Streams(splits, {s: len(d) for s, d in dd.items()})


class FolderSource(Source):
    """A local folder ``load_dataset`` understands: ``imagefolder``, parquet or webdataset shards with a card."""

    def __init__(self, path: Path, config: str | None) -> None:
        self.folder, self.config, self.name, self.path = path, config, path.name, str(path)

    def load(self) -> DatasetDict:
        return _as_dict(_local(self.path, lambda: load_dataset(self.path, name=self.config)))

    def stream(self) -> Streams:
        return _stream_builder(self.path, lambda: load_dataset_builder(self.path, name=self.config))

    def wants_streaming(self) -> bool:
        return any(self.folder.rglob('*.tar'))


class FilesSource(Source):
    """One data file or a glob of them (``data/*.parquet``)."""

    def __init__(self, source: str, files: list[str], globbed: bool) -> None:
        self.source, self.files, self.globbed = source, files, globbed
        self.name = Path(files[0]).parent.name if globbed else Path(files[0]).name

    def load(self) -> DatasetDict:
        others = [f for f in self.files if not f.endswith('.parquet')]
        if others:
            raise DataError(
                f'cannot tell the format of {others[:3]} ({self.source}); expected parquet files, a folder or a Hub '
                'dataset id'
            )
        data_files = _parquet_splits(self.source, self.files) if self.globbed else {'train': self.files}
        return _as_dict(_local(self.source, lambda: load_dataset('parquet', data_files=data_files)))

    def stream(self) -> Streams:
        kinds = {SHARD_BUILDERS.get(Path(f).suffix) for f in self.files}
        if None in kinds or len(kinds) != 1:
            raise DataError(
                f'{self.source}: expected parquet (.parquet) or webdataset (.tar) shard files of one kind, got '
                f'{[os.path.basename(f) for f in self.files[:5]]}'
            )
        builder = kinds.pop()
        return _stream_builder(self.source, lambda: load_dataset_builder(builder, data_files={'train': self.files}))

    def wants_streaming(self) -> bool:
        return any(f.endswith('.tar') for f in self.files)


class HubSource(Source):
    """A Hub dataset repo ``org/name``."""

    def __init__(self, repo_id: str, config: str | None) -> None:
        self.repo_id, self.config, self.name = repo_id, config, repo_id

    def load(self) -> DatasetDict:
        self._check_exists()
        try:
            return _as_dict(load_dataset(self.repo_id, name=self.config))
        except (OSError, ValueError) as e:  # DatasetNotFoundError, hub HTTP errors, an unknown configuration
            raise DataError(f'cannot load Hub dataset {self.repo_id!r}: {first_line(e)}') from e

    def stream(self) -> Streams:
        return _stream_builder(self.repo_id, lambda: load_dataset_builder(self.repo_id, name=self.config))

    def wants_streaming(self) -> bool:
        if datasets.config.HF_HUB_OFFLINE:
            return False
        try:
            files = HfApi().dataset_info(self.repo_id, files_metadata=True, timeout=10).siblings or []
        except Exception:  # not a reachable Hub dataset: the map-style loader says what is wrong
            return False
        data = [f for f in files if f.rfilename.endswith(('.tar', '.parquet', '.arrow'))]
        big = sum(f.size or 0 for f in data) > STREAM_ABOVE_BYTES
        if any(f.rfilename.endswith('.tar') for f in data) or big:
            logger.info(
                '%s: webdataset shards or more than %d GiB of data files: streaming',
                self.repo_id,
                STREAM_ABOVE_BYTES >> 30,
            )
            return True
        return False

    def _check_exists(self) -> None:
        """One clear line (no retry storm) when the dataset does not exist or the Hub cannot be reached."""
        if datasets.config.HF_HUB_OFFLINE:  # offline, load_dataset reads the local cache
            return
        try:
            HfApi().dataset_info(self.repo_id, timeout=10)
        except HFValidationError:
            raise DataError(
                f'no such folder/file and no valid Hub id: {self.repo_id!r} (expected a local path or org/name)'
            ) from None
        except RepositoryNotFoundError:
            raise DataError(
                f'no such dataset: {self.repo_id!r} is not a local folder or file, nor a dataset on the Hub '
                f'({constants.ENDPOINT}); a private or gated one needs HF_TOKEN'
            ) from None
        except HfHubHTTPError:
            pass  # e.g. gated or rate limited: load_dataset says what to do
        except Exception as e:  # the transport's own errors (no network, DNS, timeout)
            raise DataError(
                f'{self.repo_id!r} is not a local folder or file, and the Hub ({constants.ENDPOINT}) cannot be '
                f'reached to look it up ({type(e).__name__}: {e}); a Hub dataset downloaded before loads with '
                'HF_HUB_OFFLINE=1'
            ) from None


def create_source(source: str, config: str | None = None, embedded_cache: str | os.PathLike = EMBEDDED_CACHE) -> Source:
    """The ``Source`` that ``source`` names (see the module docstring); ``'default'`` is prepared when missing.

    Raises:
        DataError: a path that does not exist (at once, never tried as a Hub id) or a pattern that matches no file.
    """
    if source == 'default':
        return EmbeddedSource(embedded_cache)
    path = Path(source).expanduser()
    if path.is_dir():
        recover_dir(path)
        return SavedSource(path) if is_saved_dataset(path) else FolderSource(path, config)
    if path.is_file():
        return FilesSource(source, [str(path)], globbed=False)
    if has_glob(source):
        files = sorted(f for f in glob.glob(str(path), recursive=True) if os.path.isfile(f))
        if not files:
            raise DataError(f'no such folder/file: {source} (the pattern matches no file)')
        return FilesSource(source, files, globbed=True)
    if looks_like_path(source):
        raise DataError(
            f'no such folder/file: {source} (expected an existing save_to_disk folder, imagefolder directory or '
            'parquet file(s); a Hub id is written org/name)'
        )
    return HubSource(source, config)


# ----------------------------------------------------------------------------------------------------------------------
# Map-style helpers


def _as_dict(loaded: Any) -> DatasetDict:
    return loaded if isinstance(loaded, DatasetDict) else DatasetDict({'train': loaded})


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
        line = first_line(e)
        hint = ' (an empty split?)' if 'corresponds to no data' in line else ''
        raise DataError(f'cannot load dataset {source}: {line}{hint}') from e


def _empty_saved_splits(path: Path) -> list[str]:
    """Splits of a ``save_to_disk`` folder that hold no data files (``load_from_disk`` fails on them)."""
    try:
        names = json.loads((path / 'dataset_dict.json').read_text())['splits']
        return [n for n in names if not json.loads((path / n / 'state.json').read_text()).get('_data_files')]
    except (OSError, ValueError, KeyError, TypeError):
        return []


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


# ----------------------------------------------------------------------------------------------------------------------
# Streamed shards


def _stream_builder(source: str, make_builder) -> Streams:
    """Streams of a ``datasets`` builder; parquet and webdataset shard sets are checked and read by ``ShardReader``."""
    try:
        builder = make_builder()
    except (OSError, ValueError) as e:
        raise DataError(f'cannot stream dataset {source!r}: {first_line(e)}') from e
    data_files = builder.config.data_files or {}
    card_sizes = {s: int(i.num_examples) for s, i in (builder.info.splits or {}).items() if i.num_examples}
    if builder.name not in SHARD_BUILDERS.values():
        try:
            return Streams(dict(builder.as_streaming_dataset()), card_sizes)
        except (OSError, ValueError) as e:
            raise DataError(f'cannot stream dataset {source!r}: {first_line(e)}') from e
    rows = {s: check_shards(builder.name, list(files)) for s, files in data_files.items()}
    try:
        plain = builder.as_streaming_dataset()
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DataError(f'cannot stream dataset {source!r}: {first_line(e)}') from e
    splits, sizes = {}, dict(card_sizes)
    for split, stream in plain.items():
        files = list(data_files[split])
        splits[split] = ShardReader(builder.name, stream.features).stream(files)
        counted = rows.get(split)
        if split not in sizes and counted is not None:
            sizes[split] = sum(counted)
            logger.info('%s: %d examples in %r, counted from the parquet footers', source, sizes[split], split)
    return Streams(splits, sizes)


def _shard_name(file: str) -> str:
    """A shard as a person finds it: the path inside the repo for ``hf://`` files, else the local path."""
    if file.startswith('hf://'):
        parts = file.split('/', 5)  # hf:, '', datasets, org, name@rev, path
        return parts[5] if len(parts) > 5 else file
    return file


def _open_file(file: str):
    """A local file, or an ``hf://`` file read through ``HfFileSystem`` (ranged reads: a footer costs one request)."""
    return HfFileSystem().open(file, 'rb') if file.startswith('hf://') else open(file, 'rb')


def check_shards(builder: str, files: list[str]) -> list[int] | None:
    """Refuse a shard set ``datasets`` would trip over mid-run, naming the shard; the rows of each parquet shard.

    Parquet: every footer is read (remote files: the footer only), so a truncated, empty, random or foreign file,
    a shard with 0 rows and a shard of another schema are refused before training. Local webdataset tars have their
    member headers read (remote tars are checked as they stream).

    Returns:
        Rows per parquet shard (from the footers), ``None`` for webdataset.

    Raises:
        DataError: naming the shard and what is wrong with it.
    """
    if builder == 'parquet':
        counts, first_schema = [], None
        for file in files:
            try:
                with _open_file(file) as f:
                    meta = pq.read_metadata(f)
            except (OSError, pa.ArrowException, ValueError) as e:
                raise DataError(
                    f'shard {_shard_name(file)} is not a readable parquet file ({first_line(e)}); expected a complete '
                    'parquet shard (was it cut short or replaced?)'
                ) from None
            schema = meta.schema.to_arrow_schema()
            if first_schema is None:
                first_schema, first = schema, file
            elif not schema.equals(first_schema, check_metadata=False):
                raise DataError(
                    f'shard {_shard_name(file)} has columns {_columns(schema)}, shard {_shard_name(first)} has '
                    f'{_columns(first_schema)}; expected one schema in every shard of a split'
                )
            if meta.num_rows == 0:
                raise DataError(f'shard {_shard_name(file)} holds 0 rows; expected examples in every shard')
            counts.append(meta.num_rows)
        return counts
    for file in files:
        if not file.startswith('hf://'):
            _check_tar(file)
    return None


def _columns(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) for f in schema}


def _check_tar(file: str) -> None:
    try:
        with open(file, 'rb') as f, tarfile.open(fileobj=f) as tar:
            names = [m.name for m in tar.getmembers() if m.isfile()]
            check_tar_end(f, tar.offset, file)
    except DataError:
        raise
    except (OSError, tarfile.TarError, EOFError) as e:
        raise DataError(
            f'shard {file} is not a readable tar file ({first_line(e)}); expected a complete webdataset shard (was it '
            'cut short or replaced?)'
        ) from None
    if not names:
        raise DataError(f'shard {file} holds no examples (an empty tar); expected examples in every shard')


def check_tar_end(f, offset: int, name: str) -> None:
    """Refuse a tar that stops without its end-of-archive marker (two zero blocks): ``tarfile`` reads a tar cut
    inside a member header as a complete, shorter one."""
    f.seek(offset)
    end = f.read(2 * tarfile.BLOCKSIZE)
    if len(end) < 2 * tarfile.BLOCKSIZE or end.strip(b'\0'):
        raise DataError(
            f'shard {_shard_name(name)} is cut short: it stops at byte {offset + len(end)} without the end-of-archive '
            'marker a complete tar ends with; expected a complete webdataset shard'
        )


class ShardReader:
    """Streams a set of parquet or webdataset shards shard by shard, adding each example's shard and row.

    The set is an ``IterableDataset.from_generator`` over the shard list, so shuffling, ``split_dataset_by_node`` and
    DataLoader workers split it by shard as they would ``datasets``' own stream; a shard is read in one pass with
    pyarrow (parquet, by record batch) or tarfile (webdataset: members ``<key>.<column>``, as ``datasets`` reads
    them), local or through ``HfFileSystem``. An unreadable shard, or a row without the columns of the others, is
    one ``DataError`` naming the shard and row.
    """

    def __init__(self, builder: str, features: Features) -> None:
        self.builder = builder
        self.features = Features(
            {k: HFImage(decode=False) if isinstance(v, HFImage) else v for k, v in features.items()}
        )

    def stream(self, files: list[str]) -> IterableDataset:
        features = Features({**self.features, SHARD_KEY: Value('string'), ROW_KEY: Value('int64')})
        return IterableDataset.from_generator(
            _read_shards, features=features, gen_kwargs={'shards': files, 'reader': self}
        )

    def read(self, shard: str):
        name, row = _shard_name(shard), -1
        rows = self._parquet_rows(shard) if self.builder == 'parquet' else self._tar_rows(shard)
        try:
            for row, example in enumerate(rows):
                missing = [c for c in self.features if c not in example]
                if missing:
                    raise DataError(
                        f'row {row} of shard {name} lacks {missing}; expected the columns {list(self.features)} '
                        'of the other shards'
                    )
                yield {**{c: example[c] for c in self.features}, SHARD_KEY: name, ROW_KEY: row}
        except DataError:
            raise
        except Exception as e:  # pyarrow, tarfile, a truncated download: the shard is at fault, say which
            raise DataError(f'cannot read shard {name} after row {row}: {first_line(e)}') from None
        if row < 0:
            raise DataError(f'shard {name} holds no examples; expected examples in every shard')

    def _parquet_rows(self, shard: str):
        with _open_file(shard) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                yield from batch.to_pylist()

    def _tar_rows(self, shard: str):
        example, key = {}, None
        with _open_file(shard) as f, tarfile.open(fileobj=f, mode='r|*') as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, _, column = member.name.rpartition('/')[2].partition('.')
                if key is not None and stem != key:
                    yield example
                    example = {}
                key = stem
                if column in self.features:
                    example[column] = self._wds_value(column, tar.extractfile(member).read(), member.name)
            if key is not None:
                yield example
            check_tar_end(f, tar.offset, shard)

    def _wds_value(self, column: str, data: bytes, path: str) -> Any:
        """A webdataset member as ``datasets`` reads it: image bytes, a class index, or text."""
        feature = self.features[column]
        if isinstance(feature, HFImage):
            return {'bytes': data, 'path': path}
        text = data.decode().strip()
        if isinstance(feature, datasets.ClassLabel):
            return int(text) if text.lstrip('-').isdigit() else feature.str2int(text)
        if isinstance(feature, Value) and 'int' in feature.dtype:
            return int(text)
        return json.loads(text) if column == 'json' else text


def _read_shards(shards: list[str], reader: ShardReader):
    for shard in shards:
        yield from reader.read(shard)
