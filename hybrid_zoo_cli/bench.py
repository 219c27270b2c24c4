"""Command line and configuration of ``hybrid-zoo bench``: what to measure (``BenchConfig``), presets and the
the size classes of the built-in peer sets. Imports neither torch nor timm, so ``hybrid-zoo bench --help`` starts at once and the
benchmark's scheduler (``hybrid_zoo.benchmarks.speed``) stays free of torch too."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

PEER_SIZES = ('tiny', 'small', 'base')  # the size classes of the built-in peer sets (hybrid_zoo.benchmarks.peers)

# 16 GiB: no block is ever returned to the kernel, by mmap threshold or by trimming (see the module docstring)
MALLOC_NO_TRIM: dict[str, str] = {'MALLOC_MMAP_THRESHOLD_': '17179869184', 'MALLOC_TRIM_THRESHOLD_': '17179869184'}
LAYOUTS = ('nchw', 'channels_last')


@dataclass
class BenchConfig:
    """What to measure and how; ``hybrid-zoo bench --help`` documents each field under its flag name."""

    img_size: int = 224
    batch_size: int = 32
    latency_batch_size: int = 1
    train_batch_size: int = 16
    rounds: int = 3
    warmup: int = 2
    iters: int = 2
    latency_warmup: int = 2
    latency_iters: int = 8
    train_warmup: int = 1
    train_iters: int = 4
    layouts: tuple[str, ...] = LAYOUTS
    train_layout: str = 'channels_last'
    train: bool = True
    latency: bool = True
    reparam: bool = True
    compile: bool = False
    threads: int = 0  # 0: every core this process may run on
    malloc_tuning: bool = True
    device: str = 'cpu'
    amp: str = 'none'  # 'none' (fp32) or 'bf16' (torch.autocast)
    reference: bool = True
    reference_batch: int = 32
    reference_mm_size: int = 4096
    reference_iters: int = 5
    num_classes: int = 1000
    jobs: int = 1
    worker_timeout: float = 1800.0
    time_budget: float | None = None
    import_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.layouts = tuple(self.layouts)
        self.import_modules = tuple(self.import_modules)
        if not self.threads:
            self.threads = default_threads()
        bad = [v for v in (*self.layouts, self.train_layout) if v not in LAYOUTS]
        if bad or not self.layouts:
            raise ValueError(f'layouts must be among {LAYOUTS}, got {list(self.layouts)} / {self.train_layout!r}')
        if self.amp not in ('none', 'bf16'):
            raise ValueError(f"amp must be 'none' or 'bf16', got {self.amp!r}")
        if not re.fullmatch(r'cpu|cuda(:\d+)?', self.device):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        for name in ('img_size', 'batch_size', 'latency_batch_size', 'train_batch_size', 'rounds', 'jobs'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')
        for name in ('iters', 'latency_iters', 'train_iters', 'reference_iters'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1 (timed iterations), got {getattr(self, name)}')

    @classmethod
    def from_dict(cls, data: dict) -> BenchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def default_threads() -> int:
    """Cores this process may run on (its affinity mask), else the machine's core count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def allocator_label(config: BenchConfig) -> str:
    return ' '.join(f'{k}={v}' for k, v in MALLOC_NO_TRIM.items()) if config.malloc_tuning else 'glibc default'


PRESETS: dict[str, dict[str, Any]] = {
    'cpu': {},
    # tools/gpu_bench.py: one round (GPU timings are stable), batch 256 bf16, eager and compiled, <= 5 minutes
    'gpu': {
        'device': 'cuda',
        'amp': 'bf16',
        'batch_size': 256,
        'rounds': 1,
        'warmup': 5,
        'iters': 20,
        'latency_warmup': 5,
        'latency_iters': 20,
        'compile': True,
        'train': False,
        'reference_batch': 256,
        'reference_mm_size': 8192,
        'reference_iters': 20,
        'jobs': 4,
        'time_budget': 250.0,
        'worker_timeout': 240.0,
        'name': 'bench-gpu',
    },
}


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog='hybrid-zoo bench',
        description='Measure timm models side by side in one process tree: params, GMACs (attention counted), '
        'inference images/s and batch-1 latency in NCHW and channels_last, training images/s, peak memory, '
        'optionally torch.compile, and the machine reference GEMM rates; writes JSON, CSV, a markdown table and a '
        'plot, and checks the bench issue targets. Each (model, round) runs in a fresh worker process started with '
        f'{allocator_label(d)}, so glibc keeps freed memory and a result does not depend on what ran before.',
        epilog='The comparison of the bench issue: hybrid-zoo bench --peers all (about 30 min on 2 cores).',
    )
    g = p.add_argument_group('models')
    g.add_argument(
        '--models', nargs='+', default=[], metavar='NAME', help='timm model names; without it, our nine models'
    )
    g.add_argument('--family', action='store_true', help='add our nine models to --models')
    g.add_argument(
        '--peers',
        nargs='+',
        default=[],
        choices=[*PEER_SIZES, 'all'],
        help='built-in peer sets to add, by size class (the models: hybrid_zoo/benchmarks/peers.py, or '
        'docs/performance.md)',
    )
    g.add_argument(
        '--import',
        dest='import_modules',
        nargs='+',
        default=[],
        metavar='MODULE',
        help='modules to import in every worker (plugins that register more timm models)',
    )
    g = p.add_argument_group('what to measure')
    g.add_argument('--img-size', type=int, default=d.img_size, help='square input side in pixels (%(default)s)')
    g.add_argument('--batch-size', type=int, default=d.batch_size, help='batch for images/s (%(default)s)')
    g.add_argument(
        '--latency-batch-size', type=int, default=d.latency_batch_size, help='batch for latency (%(default)s)'
    )
    g.add_argument(
        '--train-batch-size', type=int, default=d.train_batch_size, help='batch of the training step (%(default)s)'
    )
    g.add_argument(
        '--layouts',
        nargs='+',
        default=list(d.layouts),
        choices=LAYOUTS,
        help='memory layouts timed for inference; the faster is reported, with the ratio (both)',
    )
    g.add_argument(
        '--train-layout', default=d.train_layout, choices=LAYOUTS, help='layout of the training step (%(default)s)'
    )
    g.add_argument('--no-train', dest='train', action='store_false', help='skip the training step')
    g.add_argument('--no-latency', dest='latency', action='store_false', help='skip the batch-1 latency')
    g.add_argument(
        '--reparam',
        action=argparse.BooleanOptionalAction,
        default=d.reparam,
        help="fold BN and branches (timm's reparameterize_model) where a model supports it (%(default)s)",
    )
    g.add_argument(
        '--compile',
        action=argparse.BooleanOptionalAction,
        default=d.compile,
        help='also time torch.compile (inductor) in the faster layout and report the speed-up (%(default)s)',
    )
    g.add_argument(
        '--no-reference',
        dest='reference',
        action='store_false',
        help='skip the reference rates: a channels_last 1x1 conv (oneDNN on CPU) and torch.mm',
    )
    g.add_argument(
        '--reference-batch',
        type=int,
        default=d.reference_batch,
        help='batch of the 1x1-conv reference, Bx1024x28x28 -> 1024 (%(default)s)',
    )
    g.add_argument(
        '--reference-mm-size',
        type=int,
        default=d.reference_mm_size,
        help='N of the NxN torch.mm reference (%(default)s)',
    )
    g.add_argument('--num-classes', type=int, default=d.num_classes, help='classifier width (%(default)s)')
    g = p.add_argument_group('how')
    g.add_argument('--device', default=d.device, help="'cpu' or 'cuda[:N]' (%(default)s)")
    g.add_argument('--amp', default=d.amp, choices=('none', 'bf16'), help='autocast dtype; none = fp32 (%(default)s)')
    g.add_argument('--threads', type=int, default=0, help='torch threads per worker; 0 = every core available (0)')
    g.add_argument(
        '--no-malloc-tuning',
        dest='malloc_tuning',
        action='store_false',
        help="start the workers with glibc's default allocator settings, to compare",
    )
    g.add_argument('--rounds', type=int, default=d.rounds, help='rounds, interleaved across models (%(default)s)')
    g.add_argument('--warmup', type=int, default=d.warmup, help='untimed batches per layout per round (%(default)s)')
    g.add_argument('--iters', type=int, default=d.iters, help='timed batches per layout per round (%(default)s)')
    g.add_argument(
        '--latency-warmup', type=int, default=d.latency_warmup, help='untimed latency calls per round (%(default)s)'
    )
    g.add_argument(
        '--latency-iters', type=int, default=d.latency_iters, help='timed latency calls per round (%(default)s)'
    )
    g.add_argument(
        '--train-warmup', type=int, default=d.train_warmup, help='untimed training steps per round (%(default)s)'
    )
    g.add_argument(
        '--train-iters', type=int, default=d.train_iters, help='timed training steps per round (%(default)s)'
    )
    g.add_argument(
        '--reference-iters', type=int, default=d.reference_iters, help='timed reference calls per round (%(default)s)'
    )
    g.add_argument(
        '--jobs',
        type=int,
        default=d.jobs,
        help='workers at once; timed sections stay one at a time, builds and compiles overlap '
        '(for GPUs; on a CPU they disturb the timings) (%(default)s)',
    )
    g.add_argument(
        '--worker-timeout', type=float, default=d.worker_timeout, help='seconds before a worker is killed (%(default)s)'
    )
    g.add_argument(
        '--time-budget',
        type=float,
        default=None,
        help='seconds for the whole run: when short of time, compilation is dropped, then models',
    )
    g.add_argument(
        '--preset',
        choices=list(PRESETS),
        default='cpu',
        help='defaults to start from (%(default)s); gpu = ' + ', '.join(f'{k} {v}' for k, v in PRESETS['gpu'].items()),
    )
    g = p.add_argument_group('output')
    g.add_argument('--out-dir', default='model_cards/results', help='folder for the result files (%(default)s)')
    g.add_argument('--name', default='bench-cpu', help='file stem: NAME.json, .csv, .md, .png (%(default)s)')
    g.add_argument(
        '--top1-csv',
        help="CSV with columns model,top1 (timm's results-imagenet.csv works): adds a "
        'top-1 column and an images/s vs top-1 plot',
    )
    g.add_argument(
        '--report-only',
        metavar='JSON',
        help='re-render the table, CSV and plot from a saved result file instead of measuring',
    )
    g.add_argument('-q', '--quiet', action='store_true', help='no progress bar')
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` on top of the chosen ``--preset``'s defaults."""
    p = build_parser()
    known, _ = p.parse_known_args([a for a in argv or () if a not in ('-h', '--help')])  # help shows the preset
    p.set_defaults(**PRESETS[known.preset])
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    values = vars(args)
    return BenchConfig(**{f.name: values[f.name] for f in fields(BenchConfig) if f.name in values})
