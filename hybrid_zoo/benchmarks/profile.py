"""``hybrid-zoo profile``: where a model's CPU time goes, by kind of operation, and what that caps.

Each model is built as the benchmark builds it (reparameterized where supported, channels_last, eval, batch 32
at 224 px by default), except that folding does not fuse GELU and residual adds into the convolutions
(``hybrid_zoo.layers.fused``: the profile times each kind of op on its own) and run under ``inference_mode`` with a timer on every leaf module and on
``F.scaled_dot_product_attention``. Time is filed under:

- ``gemm``: 1x1 convolutions and ``nn.Linear`` (the GEMMs), with their FLOPs from the output shapes;
- ``depthwise``: convolutions with one input channel per group;
- ``dense kxk``: other convolutions (stem, downsampling, 3x3 dense);
- ``attention``: ``F.scaled_dot_product_attention`` (FLOPs ``4 B H Lq Lk d``);
- ``activation``: GELU / ReLU / SiLU / Hardswish / Sigmoid modules;
- ``norm``: BatchNorm / LayerNorm / GroupNorm modules left after folding;
- ``rest``: everything else in the forward (residual adds, reshapes, pooling, functional activations).

With the machine's channels_last 1x1-conv rate ``R`` measured in the same process, it reports the ceiling
the non-GEMM work puts on the whole model: ``total FLOPs / (gemm FLOPs / R + non-GEMM time)``, i.e. the share
of ``R`` the model would reach if its GEMMs ran exactly at ``R`` and everything else took the time measured.
A target above that ceiling cannot be met without removing or speeding up non-GEMM work.

The **shape ceiling** is the same with each GEMM at the rate oneDNN reaches on that GEMM's own shape run alone
(every distinct shape is timed in isolation): small channel counts run below the reference rate whatever the
model around them does, so a target above the shape ceiling needs other shapes, not better-called GEMMs.

The **training step** (the benchmark's: batch 16, channels_last, forward + backward + SGD momentum, not folded)
is split the same way from ``torch.profiler`` traces of its top-level aten ops, by phase (forward, backward,
optimizer) and kind; see :func:`profile_training`. The targets table starts from the benchmark's measured
ratios (``bench-cpu.json``) and says, for each target missed, whether non-GEMM work or the GEMM shapes cap it.

The process re-executes itself with glibc's allocator kept from trimming (the benchmark's setting) unless
that is already set. Writes ``profile-cpu.json`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models import reparameterize_model

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.profile_ops import CATEGORIES, LeafTimers, reference_rate, shape_ceiling
from hybrid_zoo.benchmarks.profile_report import render, target_ceilings
from hybrid_zoo.benchmarks.profile_training import profile_training
from hybrid_zoo.benchmarks.results import machine_meta
from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers.fused import unfused
from hybrid_zoo.logs import progress
from hybrid_zoo.train.evaluate import create_model

_log = logging.getLogger(__name__)


def profile_model(
    name: str,
    batch: int = 32,
    img_size: int = 224,
    iters: int = 4,
    ref: float | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Time per category (median over ``iters`` forwards after a warm-up) for one timm model."""

    model = create_model(name, img_size=img_size, **(model_kwargs or {})).eval()
    total_flop = 2e9 * batch * count_macs(model, (3, img_size, img_size)).gmacs  # counted for one image
    try:
        with unfused():  # GELU and residual adds stay their own modules, so their time is filed under their kind
            model = reparameterize_model(model)
    except Exception as e:  # noqa: BLE001 - a model whose fuse hook is not timm's: profile it unfolded
        _log.warning('%s: not reparameterized (%s)', name, e)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    timers = LeafTimers()
    handles = timers.attach(model)
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = timers.sdpa(original)
    runs = []
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(iters):
                timers.time, timers.flop = dict.fromkeys(CATEGORIES, 0.0), dict.fromkeys(CATEGORIES, 0.0)
                timers.active = True
                t0 = time.perf_counter()
                model(x)
                wall = time.perf_counter() - t0
                timers.active = False
                runs.append((wall, dict(timers.time), dict(timers.flop)))
    finally:
        F.scaled_dot_product_attention = original
        for h in handles:
            h.remove()
    wall, times, flops = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    times['rest'] = max(wall - sum(v for k, v in times.items() if k != 'rest'), 0.0)
    flops['rest'] = max(total_flop - sum(flops.values()), 0.0)
    ref = ref or reference_rate(batch)
    nongemm = wall - times['gemm']
    ceiling = total_flop / (flops['gemm'] / ref + nongemm) / ref
    calls = Counter({shape: n // iters for shape, n in timers.gemm_calls.items()})
    return {
        'model': name,
        'model_kwargs': dict(model_kwargs or {}),
        'batch': batch,
        'img_size': img_size,
        'ms_per_batch': round(1e3 * wall, 1),
        'img_per_s': round(batch / wall, 2),
        'gflop_per_batch': round(total_flop / 1e9, 1),
        'gflop_s': round(total_flop / wall / 1e9, 1),
        'pct_of_reference': round(100 * total_flop / wall / ref, 1),
        'ceiling_pct_of_reference': round(100 * ceiling, 1),
        **shape_ceiling(calls, False, total_flop, wall, times['gemm'], ref),
        'categories': {
            c: {
                'ms': round(1e3 * times[c], 1),
                'share_pct': round(100 * times[c] / wall, 1),
                'gflop': round(flops[c] / 1e9, 4),
                'gflop_s': round(flops[c] / times[c] / 1e9, 1) if times[c] > 0 and flops[c] > 0 else None,
            }
            for c in CATEGORIES
        },
    }


# ---------------------------------------------------------------------------------------------------------------------
def run_profile(
    models: Sequence[str],
    out: str | os.PathLike,
    bench: str | os.PathLike,
    *,
    batch_size: int = 32,
    img_size: int = 224,
    iters: int = 4,
    train: bool = True,
    train_batch_size: int = 16,
    train_iters: int = 3,
) -> dict:
    """Profile inference (and, with ``train``, a training step) of every model; write ``out`` (JSON, with its table
    and plot beside it). The verdicts start from the target ratios of the benchmark's results ``bench`` where that
    file exists. Run it in a process started with the benchmark's allocator setting (``exec_with_no_trim``)."""
    bench_path = Path(bench)
    bench_doc = json.loads(bench_path.read_text()) if bench_path.is_file() else None

    # the 1x1 rate is measured again right before each profile, so a model is set against the rate of its moment:
    # on the shared 2-core machine a slow spell can last minutes, and one rate taken at the start can fall in one
    rows, training, refs = [], [], []
    for name in progress(models, desc='profile', unit='model'):
        refs.append(reference_rate(batch_size))
        rows.append(profile_model(name, batch_size, img_size, iters, ref=refs[-1]))
        rows[-1]['reference_gflop_s'] = round(refs[-1] / 1e9, 1)
        if train:
            refs.append(reference_rate(batch_size))
            training.append(profile_training(name, train_batch_size, img_size, train_iters, ref=refs[-1]))
            training[-1]['reference_gflop_s'] = round(refs[-1] / 1e9, 1)
        for kind, p in (('inference', rows[-1]), ('training', training[-1] if train else None)):
            if p is not None:
                _log.info(
                    '%s %s: %.1f img/s, %.0f%% of the 1x1 rate (ceiling %.0f%%)',
                    name,
                    kind,
                    p['img_per_s'],
                    p['pct_of_reference'],
                    p['ceiling_pct_of_reference'],
                )
    meta = dict(machine_meta(), allocator='no-trim')
    data = {
        'meta': meta,
        'batch': batch_size,
        'img_size': img_size,
        'reference_gflop_s': round(statistics.median(refs) / 1e9, 1),
        'reference_gflop_s_range': [round(min(refs) / 1e9, 1), round(max(refs) / 1e9, 1)],
        'models': rows,
        'train_batch': train_batch_size if train else None,
        'training': training,
        'bench': str(bench_path) if bench_doc else None,
        'targets': target_ceilings(rows, training, bench_doc),
    }
    out = Path(out)
    write_json_atomic(out, data)
    render(data, out)
    return data
