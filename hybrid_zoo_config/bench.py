"""What ``hybrid-zoo bench`` measures and how (``BenchConfig``, one command-line flag per field), the memory layouts,
the allocator setting the workers start with, and the size classes of the built-in peer sets."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, fields

from .deploy import MODES
from .fields import option

PEER_SIZES = ('tiny', 'small', 'base')  # the size classes of the built-in peer sets (hybrid_zoo.benchmarks.peers)

# 16 GiB: no block is ever returned to the kernel, by mmap threshold or by trimming (see the module docstring)
MALLOC_NO_TRIM: dict[str, str] = {'MALLOC_MMAP_THRESHOLD_': '17179869184', 'MALLOC_TRIM_THRESHOLD_': '17179869184'}
LAYOUTS = ('nchw', 'channels_last')


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
