"""Streamed training data: sharded datasets read as they train, split over processes, resumable to the sample.

``open_stream`` opens any dataset as a ``datasets.IterableDataset`` (``load_dataset(..., streaming=True)``): a
Hub dataset repo or a local folder of parquet / webdataset (``.tar``) shards with a dataset card (``hybrid-zoo
prepare-data --shards`` writes one), a glob of such files, or a ``save_to_disk`` folder (streamed through
``to_iterable_dataset``). Images stay encoded until a DataLoader worker decodes and augments them with timm's
transforms.

**Validation** is a named split (``--val-split``, or validation/valid/val when the dataset has one), else carved
from the train stream by a hash of each example (its image bytes, label and ``--seed``): an example is held out
when the hash falls below ``--val-fraction``, on every process, in every epoch, whatever the shard order, so train
and validation never share an example. The validation examples (at most ``--max-val-samples``, default
``DEFAULT_STREAM_VAL_SAMPLES``) are read once at start into memory and evaluated like map-style data.

**Who reads what.** The global batch of one optimizer update is made of ``S = processes x --grad-accum-steps``
micro-batches; micro-batch ``j`` of process ``r`` comes from data slot ``r * A + j``, and slot ``k`` is
``split_dataset_by_node(stream, k, S)``: whole shards per slot when the shard count is a multiple of ``S``, else
every ``S``-th example. So a run on 2 machines and a run on 1 process with ``--grad-accum-steps 2`` build the
same global batches from the same examples. Within a slot, the shards are spread over the slot's DataLoader
workers by ``datasets`` (workers are capped at the slot's shard count), and each epoch shuffles the shard order and
a ``--shuffle-buffer`` of examples with the seed ``--seed + epoch``. An epoch is ``--samples-per-epoch`` examples
(default: the train split's size from the dataset card, less the validation share); a slot whose shards run dry
first starts another pass over them with a new shuffle.

**Exact resume.** A stream's position is the number of micro-batches each slot has delivered in the current
epoch. Every example's augmentation is seeded by (seed, epoch, slot, worker, position), and DataLoader workers
hand out batches in turn, so on resume each worker re-reads and drops (without decoding) the examples it had
delivered and continues with the same examples and the same augmentation: weights end equal to an uninterrupted
run, with any number of workers, as long as ``--workers`` stays the same (the order depends on it; a resume with
another count is refused). ``datasets``' own ``IterableDataset.state_dict()`` is not used because a resumed
shuffle buffer starts empty (its documented limit), which would change the order.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, IterableDataset
from datasets import Image as HFImage
from datasets.distributed import split_dataset_by_node

from hybrid_zoo.train.checks import DataError, check_label_range, image_error, label_array, open_encoded_image
from hybrid_zoo.train.data import (
    DataSpec,
    Split,
    _is_image_struct,
    choose_splits,
    detect_columns,
    to_model_mode,
)
from hybrid_zoo.train.embedded import EMBEDDED_CACHE
from hybrid_zoo.train.sources import ROW_KEY, SHARD_KEY, create_source

logger = logging.getLogger('hybrid_zoo.train.streaming')

# a folder: every example a stream delivers is also listed there, one file per (epoch, slot, worker), as
# "<position> <example hash>" lines (which shards each process read: the multi-machine test checks it with this)
AUDIT_ENV = 'HYBRID_ZOO_STREAM_AUDIT'
DEFAULT_STREAM_VAL_SAMPLES = 10_000  # validation examples read into memory when --max-val-samples is not given
_HASH_BINS = 1 << 32


@dataclass
class Stream:
    """An opened stream: the train split (images still encoded), the validation rows, and what they are."""

    train: IterableDataset
    val: Split
    spec: DataSpec
    num_shards: int
    train_examples: int | None  # examples in the train split before the carve (card, data or parquet footers)
    carved: bool


def _raw(ds: IterableDataset, image_column: str) -> IterableDataset:
    """The image column kept encoded ({bytes, path}): decoding happens in the DataLoader workers."""
    feature = ds.features[image_column] if ds.features else None
    if isinstance(feature, HFImage) or _is_image_struct(feature):
        return ds.cast_column(image_column, HFImage(decode=False))
    raise DataError(f'image column {image_column!r} has type {feature}; expected an Image() feature')


def example_hash(image: dict, label: int, seed: int) -> int:
    """A 32-bit hash of one example (image bytes or path, label, seed): what the validation carve keys on."""
    h = hashlib.blake2b(digest_size=8)
    h.update(str(seed).encode())
    h.update(image.get('bytes') or str(image.get('path')).encode())
    h.update(str(int(label)).encode())
    return int.from_bytes(h.digest(), 'little') % _HASH_BINS


def where(ex: dict, fallback: str) -> str:
    """Where a streamed example is: its shard and row when the source records them, else ``fallback``."""
    return f'row {ex[ROW_KEY]} of shard {ex[SHARD_KEY]}' if ex.get(SHARD_KEY) is not None else fallback


def example_label(ex: dict, label_column: str, num_classes: int, fallback: str) -> int:
    """The label of one streamed example, checked as map-style labels are (``checks``): present, whole, in range."""
    place = lambda _: where(ex, fallback)  # noqa: E731
    labels = label_array([ex[label_column]], place)
    check_label_range(labels, num_classes, place)
    return int(labels[0])


class _Carve:
    """Picklable filter: True for examples on ``keep`` side of the hash threshold (True = validation)."""

    def __init__(
        self, *, image_column: str, label_column: str, num_classes: int, fraction: float, seed: int, keep_val: bool
    ) -> None:
        self.image_column, self.label_column, self.num_classes = image_column, label_column, num_classes
        self.threshold = int(fraction * _HASH_BINS)
        self.seed, self.keep_val = seed, keep_val

    def __call__(self, ex: dict) -> bool:
        label = example_label(ex, self.label_column, self.num_classes, 'an example of the train split')
        is_val = example_hash(ex[self.image_column], label, self.seed) < self.threshold
        return is_val == self.keep_val


def _label_names(ds: IterableDataset, label_column: str, num_classes: int | None) -> list[str]:
    feature = ds.features[label_column] if ds.features else None
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if num_classes:
        return [str(i) for i in range(num_classes)]
    raise DataError(
        f'label column {label_column!r} of the stream has type {feature}, without class names; a stream cannot be '
        'read to the end to count the classes: pass --num-classes N (or give the dataset card ClassLabel names)'
    )


def open_stream(
    source: str = 'default',
    *,
    config: str | None = None,
    train_split: str = 'train',
    val_split: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_column: str | None = None,
    label_column: str | None = None,
    num_classes: int | None = None,
    max_val_samples: int | None = None,
    embedded_cache: str | os.PathLike = EMBEDDED_CACHE,
) -> Stream:
    """Open ``source`` for streamed training; read its validation rows into memory (see the module docstring).

    Raises:
        DataError: an unknown source or split, missing columns, a train split that is not sharded enough.
    """
    src = create_source(source, config, embedded_cache)
    opened = src.stream()
    streams, name, path, sizes = opened.splits, src.name, src.path, opened.sizes
    val_split = choose_splits(streams, source, train_split, val_split)
    train = streams[train_split]
    image_column, label_column = detect_columns(train.features, image_column, label_column)
    label_names = _label_names(train, label_column, num_classes)
    raw = _raw(train, image_column)
    cap = max_val_samples or DEFAULT_STREAM_VAL_SAMPLES
    if val_split is not None:
        carved = False
        val_rows = list(itertools.islice(_raw(streams[val_split], image_column), cap))
        val_source = f'split {val_split!r} (first {len(val_rows)} examples)'
        if val_split.lower() in ('test', 'testing'):
            logger.warning('validating on the %r split: its numbers are no held-out test score', val_split)
    else:
        carved = True
        carve = dict(
            image_column=image_column,
            label_column=label_column,
            num_classes=len(label_names),
            fraction=val_fraction,
            seed=seed,
        )
        val_rows = list(itertools.islice(raw.filter(_Carve(**carve, keep_val=True)), cap))
        raw = raw.filter(_Carve(**carve, keep_val=False))
        val_source = (
            f'validation carved from {train_split} by example hash ({val_fraction:.0%}, seed {seed}); '
            f'the first {len(val_rows)} held-out examples'
        )
    if not val_rows:
        raise DataError(f'no validation examples in {source} ({val_source}); expected at least one')
    val_where = f'an example of split {val_split or train_split!r}'
    val_ds = Dataset.from_list(
        [
            {image_column: r[image_column], label_column: example_label(r, label_column, len(label_names), val_where)}
            for r in val_rows
        ]
    ).cast_column(image_column, HFImage())
    val = Split(val_ds, np.arange(len(val_ds)), val_split or 'carved', image_column, label_column)
    train_examples = sizes.get(train_split)
    spec = DataSpec(
        name=name,
        path=path,
        config=config,
        train_split=train_split,
        val_split=val_split or f'{train_split} (carved)',
        image_column=image_column,
        label_column=label_column,
        label_names=label_names,
        num_train=train_examples or -1,
        num_val=len(val_ds),
        val_source=val_source,
        extra={'streaming': True, 'num_shards': train.num_shards},
    )
    logger.info('streaming %s: %s shards in %r, %s', name, train.num_shards, train_split, val_source)
    return Stream(raw, val, spec, train.num_shards, train_examples, carved)


def samples_per_epoch(stream: Stream, requested: int | None, val_fraction: float) -> int:
    """Examples per epoch: ``requested``, else the train split's size from the card less the validation share."""
    if requested:
        return requested
    if stream.train_examples is None:
        raise DataError(
            f'the train split of {stream.spec.name} does not say how many examples it has (no dataset card with '
            'splits): pass --samples-per-epoch N to define an epoch'
        )
    return int(stream.train_examples * (1 - val_fraction)) if stream.carved else stream.train_examples


def slot_stream(stream: Stream, slot: int, num_slots: int, seed: int, buffer_size: int) -> IterableDataset:
    """Data slot ``slot`` of ``num_slots``: the shuffled train stream's share (whole shards when they divide)."""
    shuffled = stream.train.shuffle(seed=seed, buffer_size=buffer_size)  # shard order and buffer: seed + epoch
    return split_dataset_by_node(shuffled, rank=slot, world_size=num_slots)


def sample_seed(seed: int, epoch: int, slot: int, worker: int, position: int) -> int:
    """The augmentation seed of one example: a function of where it is in the stream, not of what ran before."""
    digest = hashlib.blake2b(f'{seed}/{epoch}/{slot}/{worker}/{position}'.encode(), digest_size=8).digest()
    return int.from_bytes(digest, 'little') % (1 << 63)


class StreamSlotDataset(torch.utils.data.IterableDataset):
    """One data slot for one epoch as ``(pixel_values, label)`` examples, from ``skip_batches`` batches on.

    In a DataLoader with W workers, worker ``w`` delivers batches ``w, w + W, ...``; on resume it drops (undecoded)
    the examples of the batches it had delivered. Passes repeat (with a new shuffle) until the loop stops reading.
    Labels and images are checked as map-style ones are; a bad one is named by its shard and row.
    """

    def __init__(
        self,
        stream: IterableDataset,
        transform,
        *,
        image_column: str,
        label_column: str,
        num_classes: int,
        in_chans: int,
        batch_size: int,
        seed: int,
        epoch: int,
        slot: int,
        skip_batches: int = 0,
    ) -> None:
        super().__init__()
        self.stream, self.transform, self.in_chans = stream, transform, in_chans
        self.image_column, self.label_column, self.num_classes = image_column, label_column, num_classes
        self.batch_size, self.seed, self.epoch, self.slot = batch_size, seed, epoch, slot
        self.skip_batches = skip_batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        skip = len(range(worker, self.skip_batches, workers)) * self.batch_size
        position = 0
        audit = os.environ.get(AUDIT_ENV)
        audit_file = Path(audit) / f'e{self.epoch}-slot{self.slot}-w{worker}.txt' if audit else None
        for p in itertools.count():
            self.stream.set_epoch(self.epoch * 1000 + p)  # shuffle seed = seed + this; passes never repeat an order
            seen = 0
            for ex in self.stream:
                seen += 1
                position += 1
                if position <= skip:
                    continue
                s = sample_seed(self.seed, self.epoch, self.slot, worker, position)
                random.seed(s)
                np.random.seed(s % (1 << 32))
                torch.default_generator.manual_seed(s)  # the CPU generator alone: torch.manual_seed queues GPU seeds
                fallback = f'example {position} of data slot {self.slot} (worker {worker}, epoch {self.epoch + 1})'
                label = example_label(ex, self.label_column, self.num_classes, fallback)
                image = ex[self.image_column]
                if audit_file is not None:
                    with audit_file.open('a') as f:
                        f.write(f'{position} {example_hash(image, label, 0)}\n')
                try:
                    pixels = self.transform(to_model_mode(open_encoded_image(image), self.in_chans))
                except Exception as e:
                    file = f' (file {image["path"]})' if image.get('path') else ''
                    raise image_error(where(ex, fallback) + file, e) from None
                yield pixels, label
            if not seen:
                raise DataError(
                    f'data slot {self.slot} (worker {worker}) has no training examples: the stream has fewer shards '
                    'than processes x --grad-accum-steps x workers need, or the validation carve took them all'
                )


def steps_per_epoch(samples: int, batch_size: int, num_slots: int) -> int:
    """Micro-batches per slot per epoch (every slot delivers the same number, so processes stay in step)."""
    steps = samples // (batch_size * num_slots)
    if steps < 1:
        raise DataError(
            f'--samples-per-epoch {samples} is less than one global batch ({batch_size} x {num_slots} slots); expected '
            f'at least {batch_size * num_slots}'
        )
    return steps


class StreamBatches:
    """The train batches of one process, the way the loop reads a DataLoader: ``set_epoch``, ``len``, iteration.

    Micro-batch ``m`` of an epoch comes from this process's slot ``rank * A + m % A``; ``skip`` micro-batches (a
    resumed position, a multiple of A) are not delivered again. Batches are moved to ``device``.
    """

    def __init__(
        self,
        stream: Stream,
        transform,
        *,
        in_chans: int,
        batch_size: int,
        seed: int,
        rank: int,
        num_processes: int,
        accum: int,
        samples: int,
        workers: int,
        buffer_size: int,
        device: torch.device,
    ) -> None:
        self.num_slots = num_processes * accum
        self.slots = [rank * accum + j for j in range(accum)]
        self.streams = {k: slot_stream(stream, k, self.num_slots, seed, buffer_size) for k in self.slots}
        self.workers = {k: min(workers, self.streams[k].num_shards) for k in self.slots}
        self.steps = steps_per_epoch(samples, batch_size, self.num_slots)
        self.stream, self.transform, self.in_chans, self.batch_size = stream, transform, in_chans, batch_size
        self.seed, self.accum, self.device = seed, accum, device
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps * self.accum

    def _loader(self, slot: int, skip_batches: int) -> torch.utils.data.DataLoader:
        spec = self.stream.spec
        data = StreamSlotDataset(
            self.streams[slot],
            self.transform,
            image_column=spec.image_column,
            label_column=spec.label_column,
            num_classes=spec.num_classes,
            in_chans=self.in_chans,
            batch_size=self.batch_size,
            seed=self.seed,
            epoch=self.epoch,
            slot=slot,
            skip_batches=skip_batches,
        )
        return torch.utils.data.DataLoader(
            data, batch_size=self.batch_size, num_workers=self.workers[slot], drop_last=True, persistent_workers=False
        )

    def __iter__(self):
        if self.skip % self.accum:
            raise ValueError(f'a stream resumes at an update boundary: {self.skip} is not a multiple of {self.accum}')
        done = self.skip // self.accum  # batches each slot has delivered this epoch
        iters = [iter(self._loader(k, done)) for k in self.slots]
        try:
            for _ in range(done, self.steps):
                for it in iters:
                    x, y = next(it)
                    yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        finally:
            del iters  # shuts the workers down


def describe_slots(num_shards: int, num_slots: int) -> str:
    if num_shards % num_slots == 0:
        return f'{num_shards // num_slots} whole shard(s) per slot'
    return f'{num_shards} shards do not divide into {num_slots} slots: each slot keeps every {num_slots}-th example'


def wants_streaming(source: str) -> bool:
    """Whether ``source`` should stream without being asked: webdataset (``.tar``) shards, which only stream (local
    files, a folder, a Hub repo), or a Hub dataset repo whose data files add up to more than
    ``sources.STREAM_ABOVE_BYTES``. A source that cannot be opened answers no: the map-style loader says why."""
    try:
        return create_source(source).wants_streaming()
    except DataError:
        return False
