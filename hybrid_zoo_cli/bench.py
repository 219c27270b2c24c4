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

from .fields import add_dataclass_arguments, config_from_namespace, option

PEER_SIZES = ('tiny', 'small', 'base')  # the size classes of the built-in peer sets (hybrid_zoo.benchmarks.peers)

# 16 GiB: no block is ever returned to the kernel, by mmap threshold or by trimming (see the module docstring)
MALLOC_NO_TRIM: dict[str, str] = {'MALLOC_MMAP_THRESHOLD_': '17179869184', 'MALLOC_TRIM_THRESHOLD_': '17179869184'}
LAYOUTS = ('nchw', 'channels_last')
MODES = (
    'eager',
    'compiled',
    'onnxruntime',
    'int8',
    'int8-pt2e',
)  # hybrid_zoo.deploy.MODES (kept here so --help needs no torch)


W, H = 'what to measure', 'how'


@dataclass
class BenchConfig:
    """What to measure and how; each field is the ``hybrid-zoo bench`` flag of its name, with its help here."""

    img_size: int = option(224, 'square input side in pixels', W)
    batch_size: int = option(32, 'batch for images/s', W)
    latency_batch_size: int = option(1, 'batch for latency', W)
    train_batch_size: int = option(16, 'batch of the training step', W)
    layouts: tuple[str, ...] = option(
        LAYOUTS, 'memory layouts timed for inference; the faster is reported, with the ratio', W, choices=LAYOUTS
    )
    train_layout: str = option('channels_last', 'layout of the training step', W, choices=LAYOUTS)
    train: bool = option(True, 'time a training step (forward, backward, SGD step)', W)
    latency: bool = option(True, 'time the batch-1 latency', W)
    reparam: bool = option(True, "fold BN and branches (timm's reparameterize_model) where a model supports it", W)
    compile: bool = option(
        False, 'also time torch.compile (inductor) in the faster layout and report the speed-up', W,
        action=argparse.BooleanOptionalAction,
    )  # fmt: skip
    modes: tuple[str, ...] = option(
        ('eager',), 'deployment modes timed side by side in each worker (eager, compiled = inductor with freezing, '
        'onnxruntime, int8 = ONNX Runtime static QDQ, int8-pt2e = PyTorch PT2E + inductor, needs torchao), each '
        'checked against eager first', W, choices=MODES,
    )  # fmt: skip
    reference: bool = option(
        True, 'measure the reference rates: a channels_last 1x1 conv (oneDNN on CPU) and torch.mm', W
    )
    reference_batch: int = option(32, 'batch of the 1x1-conv reference, Bx1024x28x28 -> 1024', W)
    reference_mm_size: int = option(4096, 'N of the NxN torch.mm reference', W)
    num_classes: int = option(1000, 'classifier width', W)
    import_modules: tuple[str, ...] = option(
        (), 'modules to import in every worker (plugins that register more timm models)', W, flag='--import',
        nargs='+', metavar='MODULE',
    )  # fmt: skip
    device: str = option('cpu', "'cpu' or 'cuda[:N]'", H)
    amp: str = option('none', 'autocast dtype; none = fp32', H, choices=('none', 'bf16'))
    threads: int = option(0, 'torch threads per worker; 0 = every core available', H)
    malloc_tuning: bool = option(
        True, "start the workers with glibc kept from trimming (--no-malloc-tuning: glibc's defaults, to compare)", H
    )
    rounds: int = option(3, 'rounds, interleaved across models', H)
    warmup: int = option(2, 'untimed batches per layout per round', H)
    iters: int = option(2, 'timed batches per layout per round', H)
    latency_warmup: int = option(2, 'untimed latency calls per round', H)
    latency_iters: int = option(8, 'timed latency calls per round', H)
    train_warmup: int = option(1, 'untimed training steps per round', H)
    train_iters: int = option(4, 'timed training steps per round', H)
    reference_iters: int = option(5, 'timed reference calls per round', H)
    jobs: int = option(
        1, 'workers at once; timed sections stay one at a time, builds and compiles overlap (for GPUs; on a CPU '
        'they disturb the timings)', H,
    )  # fmt: skip
    worker_timeout: float = option(1800.0, 'seconds before a worker is killed', H)
    time_budget: float | None = option(
        None, 'seconds for the whole run: when short of time, compilation is dropped, then models', H
    )

    def __post_init__(self) -> None:
        self.layouts = tuple(self.layouts)
        self.modes = tuple(dict.fromkeys(('eager', *self.modes)))  # eager always: the other modes' paired baseline
        self.import_modules = tuple(self.import_modules)
        if not self.threads:
            self.threads = default_threads()
        bad = [v for v in (*self.layouts, self.train_layout) if v not in LAYOUTS]
        if bad or not self.layouts:
            raise ValueError(f'layouts must be among {LAYOUTS}, got {list(self.layouts)} / {self.train_layout!r}')
        if any(m not in MODES for m in self.modes):
            raise ValueError(f'modes must be among {MODES}, got {list(self.modes)}')
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
    groups = {W: p.add_argument_group(W), H: p.add_argument_group(H)}
    add_dataclass_arguments(p, BenchConfig, groups)
    g = groups[H]
    g.add_argument(
        '--preset',
        choices=list(PRESETS),
        default='cpu',
        help='defaults to start from (%(default)s); gpu = ' + ', '.join(f'{k} {v}' for k, v in PRESETS['gpu'].items()),
    )
    g = p.add_argument_group('output')
    g.add_argument(
        '--results',
        '--out-dir',
        dest='out_dir',
        default='model_cards/results',
        help='folder for the result files (%(default)s)',
    )
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
    return config_from_namespace(BenchConfig, args)
