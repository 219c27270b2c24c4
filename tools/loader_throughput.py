"""Input throughput of the training loaders on the same data: map-style against streamed parquet and webdataset shards.

The data is Fashion-MNIST's train split (the embedded default data): the map-style loader reads the ``save_to_disk``
folder the trainer reads (shuffled by a sampler); the streamed loaders read the same 60,000 images written as
1,000-example shards by ``hybrid_zoo.train.shards`` (the trainer's ``StreamBatches``: shuffle buffer, hash-carved
validation filter, per-example seeded augmentation). All three decode and apply the same timm training transform
(64 px, grayscale) in 2 DataLoader workers, batch 64, no model: images/s of the input pipeline alone. The arms run
interleaved (A B C, then C B A, ...), each for ``--batches`` batches after a warm-up batch, in one process::

    python tools/loader_throughput.py   # writes model_cards/results/loader-throughput.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, load_from_disk
from timm.data import create_transform
from tqdm.auto import tqdm

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.results import machine_meta
from hybrid_zoo.train.data import ImageClassificationDataset, Split, prepare_default
from hybrid_zoo.train.shards import write_shards
from hybrid_zoo.train.streaming import StreamBatches, open_stream
from hybrid_zoo_config.results import tool_parser

BATCH, WORKERS, IMG = 64, 2, 64


def _map_style(path: str, transform):
    dd = load_from_disk(path)
    split = Split(dd['train'], np.arange(len(dd['train'])), 'train', 'image', 'label')
    ds = ImageClassificationDataset(split, transform, 1, 'fashion_mnist')
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, drop_last=True)


def _streamed(folder: Path, transform):
    stream = open_stream(str(folder), max_val_samples=100)
    return StreamBatches(
        stream,
        transform,
        in_chans=1,
        batch_size=BATCH,
        seed=0,
        rank=0,
        num_processes=1,
        accum=1,
        samples=60_000,
        workers=WORKERS,
        buffer_size=10_000,
        device=torch.device('cpu'),
    )


def _time(loader, batches: int) -> float:
    it = iter(loader)
    next(it)  # workers started, first batch decoded
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * BATCH / (time.perf_counter() - t0)
    del it
    return rate


def main(argv: list[str] | None = None) -> int:
    p = tool_parser(__doc__, 'loader-throughput.json')
    p.add_argument('--batches', type=int, default=60, help='timed batches per loader and round (default: %(default)s)')
    p.add_argument('--rounds', type=int, default=3, help='interleaved rounds (default: %(default)s)')
    p.add_argument('--work', default='data/loader-throughput', help='scratch folder for the shards (%(default)s)')
    args = p.parse_args(argv)
    name, path = prepare_default()
    if name != 'fashion_mnist':
        sys.exit('needs Fashion-MNIST (apt-get install dataset-fashion-mnist)')
    work = Path(args.work)
    train_only = DatasetDict({'train': load_from_disk(path)['train']})
    shards = {}
    for fmt in ('parquet', 'webdataset'):
        shards[fmt] = work / fmt
        if not (shards[fmt] / 'README.md').exists():
            write_shards(train_only, shards[fmt], fmt=fmt, shard_size=1000)
    transform = create_transform(IMG, is_training=True, mean=(0.449,), std=(0.226,), scale=(0.6, 1.0))
    arms = {
        'map-style (save_to_disk)': lambda: _map_style(path, transform),
        'streamed parquet shards': lambda: _streamed(shards['parquet'], transform),
        'streamed webdataset shards': lambda: _streamed(shards['webdataset'], transform),
    }
    rates: dict[str, list[float]] = {k: [] for k in arms}
    order = list(arms)
    for r in tqdm(range(args.rounds), desc='rounds'):
        for arm in order if r % 2 == 0 else order[::-1]:
            rates[arm].append(round(_time(arms[arm](), args.batches), 1))
    out = {
        'meta': machine_meta(),
        'data': 'Fashion-MNIST train split, 60,000 images; shards of 1,000 examples',
        'setup': {'batch': BATCH, 'workers': WORKERS, 'img_size': IMG, 'batches_per_round': args.batches},
        'img_per_s': {k: {'rounds': v, 'median': statistics.median(v)} for k, v in rates.items()},
    }
    base = out['img_per_s']['map-style (save_to_disk)']['median']
    out['ratio_to_map_style'] = {k: round(v['median'] / base, 3) for k, v in out['img_per_s'].items()}
    write_json_atomic(args.out, out)
    for k, v in out['img_per_s'].items():
        print(f'{k}: {v["median"]} img/s {v["rounds"]}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
