"""``hybrid-zoo profile``: where a model's CPU time goes, by kind of operation, and what that caps.

Each model is built as the benchmark builds it (reparameterized where supported, channels_last, eval, batch 32
at 224 px by default) and run under ``inference_mode`` with a timer on every leaf module and on
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
import math
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybrid_zoo.atomic import write_atomic, write_figure_atomic, write_json_atomic
from hybrid_zoo.benchmarks.peers import PROFILE_MODELS, TARGETS
from hybrid_zoo.benchmarks.results import RESULTS_DIR, machine_meta
from hybrid_zoo.benchmarks.tables import markdown_table
from hybrid_zoo_cli.profile import build_parser

_log = logging.getLogger(__name__)

CATEGORIES = ('gemm', 'depthwise', 'dense kxk', 'attention', 'activation', 'norm', 'rest')


_ACTIVATION_NAMES = {'gelu', 'gelutanh', 'quickgelu', 'relu', 'relu6', 'silu', 'swish', 'hardswish', 'hardsigmoid'}
_ACTIVATION_NAMES |= {'sigmoid', 'mish', 'starrelu', 'hardswishme', 'swishme'}


def _conv_kind(weight: Sequence[int], in_channels: int, groups: int) -> str:
    """``depthwise``, ``gemm`` (1x1, one group) or ``dense kxk`` for a conv's weight shape and groups."""
    if groups == in_channels and in_channels > 1 and weight[1] == 1:
        return 'depthwise'
    if tuple(weight[2:]) == (1, 1) and groups == 1:
        return 'gemm'
    return 'dense kxk'


def _category(module) -> str | None:
    from torch import nn

    activations = (nn.GELU, nn.ReLU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.ReLU6, nn.Hardsigmoid, nn.Mish)

    if isinstance(module, nn.Conv2d):
        return _conv_kind(module.weight.shape, module.in_channels, module.groups)
    if isinstance(module, nn.Linear):
        return 'gemm'
    if isinstance(module, activations) or type(module).__name__.lower() in _ACTIVATION_NAMES:  # timm's own classes
        return 'activation'
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or 'Norm' in type(module).__name__:
        return 'norm'
    return None


def _flop(module, out) -> float:
    """Multiply-adds x 2 of a conv or linear, from its output."""
    from torch import nn

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2.0 * out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2.0 * out.numel() * module.in_features
    return 0.0


class _Timers:
    """Accumulated seconds and FLOPs per category while ``active``."""

    def __init__(self) -> None:
        self.time = dict.fromkeys(CATEGORIES, 0.0)
        self.flop = dict.fromkeys(CATEGORIES, 0.0)
        self.gemm_calls: Counter = Counter()  # GemmShape -> calls while active
        self.active = False

    def attach(self, model) -> list:
        handles = []
        for m in model.modules():
            cat = None if list(m.children()) else _category(m)  # leaves only: no time counted twice
            if cat is None:
                continue
            handles.append(m.register_forward_pre_hook(self._pre))
            handles.append(m.register_forward_hook(self._post(cat)))
        return handles

    def _pre(self, module, args) -> None:
        module._hz_t0 = time.perf_counter()

    def _post(self, cat: str):
        def hook(module, args, out) -> None:
            if self.active:
                self.time[cat] += time.perf_counter() - module._hz_t0
                self.flop[cat] += _flop(module, out)
                if cat == 'gemm':
                    self.gemm_calls[_gemm_shape(module, args[0])] += 1

        return hook

    def sdpa(self, fn):
        def timed(q, k, v, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(q, k, v, *args, **kwargs)
            if self.active:
                self.time['attention'] += time.perf_counter() - t0
                lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
                self.flop['attention'] += 4.0 * q[..., 0, 0].numel() * lq * lk * d
            return out

        return timed


@dataclass(frozen=True)
class GemmShape:
    """One GEMM as the model runs it: a 1x1 conv on a channels_last map, or a linear layer."""

    kind: str  # 'conv' | 'linear'
    input: tuple[int, ...]  # (B, C, H, W) for a conv, (..., in_features) for a linear
    out: int  # output channels / features
    stride: int = 1

    @property
    def flop(self) -> float:
        """Forward FLOPs (2 x MACs)."""
        if self.kind == 'conv':
            b, c, h, w = self.input
            return 2.0 * b * c * self.out * (-(-h // self.stride)) * (-(-w // self.stride))
        return 2.0 * math.prod(self.input) * self.out


def _gemm_shape(module, x) -> GemmShape:
    from torch import nn

    if isinstance(module, nn.Conv2d):
        return GemmShape('conv', tuple(x.shape), module.out_channels, module.stride[0])
    return GemmShape('linear', tuple(x.shape), module.out_features)


def isolated_seconds(shape: GemmShape, train: bool = False, iters: int = 5) -> float:
    """Median seconds of one GEMM of ``shape`` run alone: forward, or forward + both gradients if ``train``.

    This is the rate oneDNN / the BLAS reach on exactly that shape, the fair ceiling for a model's GEMMs:
    small channel counts run below the 1024-channel reference rate whatever the model around them does.
    """
    import torch
    from torch import nn

    torch.manual_seed(0)
    if shape.kind == 'conv':
        op = nn.Conv2d(shape.input[1], shape.out, 1, stride=shape.stride).to(memory_format=torch.channels_last)
        x = torch.randn(shape.input).contiguous(memory_format=torch.channels_last)
    else:
        op = nn.Linear(shape.input[-1], shape.out)
        x = torch.randn(shape.input)
    if train:
        x.requires_grad_(True)
        grad = torch.randn_like(op(x))

        def run() -> None:
            op(x).backward(grad)
            x.grad = None
            op.zero_grad(set_to_none=True)

    else:

        def run() -> None:
            with torch.inference_mode():
                op(x)

    return median_seconds(run, iters)


def median_seconds(run, iters: int, warmup: int = 2) -> float:
    """Median wall seconds of ``run()`` over ``iters`` calls after ``warmup`` untimed ones."""
    times = []
    for i in range(warmup + iters):
        t0 = time.perf_counter()
        run()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _shape_ceiling(calls: Counter, train: bool, total_flop: float, wall: float, gemm_s: float, ref: float) -> dict:
    """The ceiling with each GEMM at the rate of its own shape run alone (instead of the reference rate)."""
    flop, seconds = shape_bound(calls, train)
    if not seconds:
        return {'gemm_shapes': 0, 'isolated_gemm_gflop_s': None, 'gemm_over_isolated': None, 'shape_ceiling_pct': None}
    return {
        'gemm_shapes': len(calls),
        'isolated_gemm_gflop_s': round(flop / seconds / 1e9, 1),  # the model's GEMM mix, each shape run alone
        'gemm_over_isolated': round(gemm_s / seconds, 2),  # > 1: slower inside the model than alone
        'shape_ceiling_pct': round(100 * total_flop / (seconds + wall - gemm_s) / ref, 1),
    }


def shape_bound(calls: Counter, train: bool = False) -> tuple[float, float]:
    """(FLOPs, seconds) of every GEMM call of one pass at the rate of its own shape run alone."""
    flop = seconds = 0.0
    for shape, n in calls.items():
        passes = 3 if train else 1  # forward, input gradient, weight gradient
        flop += n * passes * shape.flop
        seconds += n * isolated_seconds(shape, train)
    return flop, seconds


def reference_rate(batch: int = 32, iters: int = 8) -> float:
    """FLOP/s of a channels_last 1024->1024 1x1 conv on 28x28 (the benchmark's oneDNN reference), median."""
    import torch
    from torch import nn

    conv = nn.Conv2d(1024, 1024, 1, bias=False).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 1024, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = median_seconds(lambda: conv(x), iters)
    return 2 * batch * 28 * 28 * 1024 * 1024 / seconds


def profile_model(
    name: str,
    batch: int = 32,
    img_size: int = 224,
    iters: int = 4,
    ref: float | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Time per category (median over ``iters`` forwards after a warm-up) for one timm model."""
    import torch
    import torch.nn.functional as F
    from timm.models import reparameterize_model

    from hybrid_zoo.flops import count_macs
    from hybrid_zoo.train.evaluate import create_model

    model = create_model(name, img_size=img_size, **(model_kwargs or {})).eval()
    total_flop = 2e9 * batch * count_macs(model, (3, img_size, img_size)).gmacs  # counted for one image
    try:
        model = reparameterize_model(model)
    except Exception as e:  # noqa: BLE001 - a model whose fuse hook is not timm's: profile it unfolded
        _log.warning('%s: not reparameterized (%s)', name, e)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    timers = _Timers()
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
        **_shape_ceiling(calls, False, total_flop, wall, times['gemm'], ref),
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
# Training step: forward + backward + SGD step, filed by aten op from torch.profiler traces

PHASES = ('forward', 'backward', 'optimizer')
_CONV_OPS = {'aten::conv2d', 'aten::convolution', 'aten::_convolution', 'aten::convolution_backward'}
_GEMM_OPS = {'aten::linear', 'aten::addmm', 'aten::mm'}
_ATTENTION_OPS = {'aten::matmul', 'aten::bmm', 'aten::baddbmm', 'aten::softmax', 'aten::_softmax'}
_ATTENTION_OPS |= {'aten::_softmax_backward_data'}
_ACTIVATION_OPS = {'gelu', 'relu', 'relu_', 'silu', 'silu_', 'hardswish', 'hardswish_', 'sigmoid', 'mish', 'elu'}
_ACTIVATION_OPS |= {'threshold_backward', 'hardtanh', 'hardtanh_', 'hardsigmoid'}
_NORM_OPS = {'batch_norm', 'layer_norm', 'group_norm', 'native_batch_norm_backward', 'native_layer_norm_backward'}
_NORM_OPS |= {'native_group_norm_backward', 'native_batch_norm', 'native_layer_norm', 'native_group_norm'}


def _concrete(event, index: int, default):
    values = getattr(event, 'concrete_inputs', None) or []
    value = values[index] if index < len(values) else None
    return default if value in (None, '', []) else value


def _op_category(event) -> tuple[str, float]:
    """(category, FLOPs) of one top-level aten op of a training step, from its name and recorded shapes.

    FLOPs are counted for convolutions, GEMMs and attention (forward and backward, as
    ``torch.utils.flop_counter`` counts them); everything else counts 0.
    """
    name, shapes = event.name, event.input_shapes or []
    short = name.removeprefix('aten::')
    if name in _CONV_OPS:
        if name == 'aten::convolution_backward':  # (grad_out, input, weight, bias_sizes, ..., groups, output_mask)
            grad_out, inp, weight = shapes[0], shapes[1], shapes[2]
            groups, mask = int(_concrete(event, 9, 1)), _concrete(event, 10, [True, True, True])
            passes = int(bool(mask[0])) + int(bool(mask[1]))
            flop = 2.0 * math.prod(grad_out) * math.prod(weight[1:]) * passes
        else:  # conv2d / convolution: (input, weight, bias, stride, padding, dilation, groups)
            inp, weight = shapes[0], shapes[1]
            groups = int(_concrete(event, 6 if name == 'aten::conv2d' else 8, 1))
            stride, padding, dilation = (_concrete(event, i, [1, 1]) for i in (3, 4, 5))
            out_hw = _conv_out_hw(inp[2:], weight[2:], _pair(stride), padding, _pair(dilation))
            flop = 2.0 * inp[0] * weight[0] * math.prod(out_hw) * math.prod(weight[1:])
        return _conv_kind(weight, inp[1], groups), flop
    if name in _GEMM_OPS:
        if name == 'aten::linear':  # (input, weight, bias)
            return 'gemm', 2.0 * math.prod(shapes[0]) * shapes[1][0]
        a, b = shapes[-2], shapes[-1]  # mm(a, b) / addmm(bias, a, b)
        return 'gemm', 2.0 * a[0] * a[1] * b[1]
    if 'scaled_dot_product' in name:  # forward (q, k, v, ...) or backward (grad_out, q, k, v, ...)
        q, k = (shapes[1], shapes[2]) if name.endswith('_backward') else (shapes[0], shapes[1])
        fwd = 4.0 * math.prod(q[:-2]) * q[-2] * k[-2] * q[-1]
        return 'attention', 2 * fwd if name.endswith('_backward') else fwd
    if name in _ATTENTION_OPS:
        flop = 0.0
        if name in ('aten::matmul', 'aten::bmm') and len(shapes) >= 2 and len(shapes[0]) >= 2 and shapes[1]:
            a, b = shapes[0], shapes[1]
            flop = 2.0 * math.prod(a) * b[-1]
        elif name == 'aten::baddbmm' and len(shapes) >= 3:
            flop = 2.0 * math.prod(shapes[1]) * shapes[2][-1]
        return 'attention', flop
    if short in _ACTIVATION_OPS or short.removesuffix('_backward') in _ACTIVATION_OPS:
        return 'activation', 0.0
    if short in _NORM_OPS:
        return 'norm', 0.0
    return 'rest', 0.0


def _conv_out_hw(size, kernel, stride, padding, dilation) -> list[int]:
    if isinstance(padding, str):  # conv2d(padding='same' | 'valid')
        if padding == 'same':
            return list(size)
        padding = [0, 0]
    return [
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, _pair(padding), dilation, strict=True)
    ]


def _pair(value) -> list[int]:
    return list(value) * (2 // len(value)) if isinstance(value, list | tuple) else [int(value)] * 2


def _phase(chain: Sequence[str]) -> str:
    if any(n.startswith('Optimizer.') for n in chain):
        return 'optimizer'
    if any(n.startswith('autograd::engine::evaluate_function') for n in chain):
        return 'backward'
    return 'forward'


def top_level_ops(events) -> list:
    """``(phase, event)`` of the top-level aten ops of a ``torch.profiler`` trace, in the order they started.

    A top-level op is an ``aten::`` event with no ``aten::`` ancestor, so nothing is counted twice;
    the optimizer's ops (under ``Optimizer.step``/``zero_grad``) are in phase ``optimizer``.
    """
    out = []
    for e in sorted(events, key=lambda e: e.time_range.start):
        if not e.name.startswith('aten::'):
            continue
        chain, parent = [], e.cpu_parent
        while parent is not None:
            chain.append(parent.name)
            parent = parent.cpu_parent
        if not any(n.startswith('aten::') for n in chain):
            out.append((_phase(chain), e))
    return out


def trace_breakdown(shaped: list, timed: list | None = None) -> dict:
    """Time (s) and FLOPs per ``(phase, category)``, and the forward GEMM calls, of one traced step.

    Args:
        shaped: :func:`top_level_ops` of a trace recorded with shapes: what each op is and its FLOPs.
        timed: The same of a trace of the same step recorded without shapes, whose times are used (recording
            shapes makes later steps of some models 2-3x slower); default: ``shaped``'s own times.
    """
    timed = shaped if timed is None else timed
    if [e.name for _, e in shaped] != [e.name for _, e in timed]:
        raise RuntimeError('the two traces of a training step ran different ops; cannot pair them')
    time_s = {(ph, c): 0.0 for ph in PHASES for c in CATEGORIES}
    flop = dict.fromkeys(time_s, 0.0)
    calls: Counter = Counter()
    for (phase, e), (_, t) in zip(shaped, timed, strict=True):
        cat, f = ('rest', 0.0) if phase == 'optimizer' else _op_category(e)
        time_s[phase, cat] += t.cpu_time_total / 1e6
        flop[phase, cat] += f
        if phase == 'forward' and cat == 'gemm':
            calls[_traced_gemm_shape(e)] += 1
    return {'time_s': time_s, 'flop': flop, 'gemm_calls': calls}


def _traced_gemm_shape(event) -> GemmShape:
    shapes = event.input_shapes
    if event.name in ('aten::conv2d', 'aten::convolution', 'aten::_convolution'):
        stride = _pair(_concrete(event, 3, [1, 1]))[0]
        return GemmShape('conv', tuple(shapes[0]), shapes[1][0], stride)
    if event.name == 'aten::linear':
        return GemmShape('linear', tuple(shapes[0]), shapes[1][0])
    a, b = shapes[-2], shapes[-1]  # mm / addmm: (a0, a1) @ (a1, b1)
    return GemmShape('linear', tuple(a), b[1])


UNDISTURBED = 1.25  # a traced step this much slower than the plain median is not used for the split


def _attribute(traced: dict, wall: float) -> dict:
    """Traced seconds per ``(phase, category)`` made to add up to the untraced step time ``wall``.

    The profiler costs about the same per op whatever the op does, so its overhead lands on the many small
    ops (``rest``: adds, multiplies, views, the optimizer's per-parameter updates), not on the convolutions
    and attention kernels: on a model with many small ops the traced step is 30-60% longer. So the named
    categories keep their traced time, and ``rest`` (each phase in proportion) gets what is left of
    ``wall``; only if the named ones alone exceed ``wall`` is everything scaled down.
    """
    named = {k: v for k, v in traced.items() if k[1] != 'rest'}
    rest = {k: v for k, v in traced.items() if k[1] == 'rest'}
    left = wall - sum(named.values())
    if left < 0 or not sum(rest.values()):
        scale = wall / sum(traced.values())
        return {k: v * scale for k, v in traced.items()}
    share = left / sum(rest.values())
    return {**named, **{k: v * share for k, v in rest.items()}}


def profile_training(
    name: str,
    batch: int = 16,
    img_size: int = 224,
    iters: int = 3,
    ref: float | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """One training step (forward, backward, SGD momentum step, channels_last, as the benchmark times it).

    The step's wall time is the median of ``iters`` plain steps after a warm-up; the split by phase and
    kind of operation comes from the median of up to ``iters`` more steps traced by ``torch.profiler``
    (shapes from one extra trace), made to add up to that wall time by :func:`_attribute`. The ceiling is
    the inference one applied to the step: the share of the 1x1 rate ``R`` the step would reach if its
    GEMMs (forward, input and weight gradients) ran at ``R``; the shape ceiling puts each GEMM at the rate
    of its own shape run alone instead.
    """
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from hybrid_zoo.benchmarks.speed import training_step
    from hybrid_zoo.train.evaluate import create_model

    os.environ.setdefault('KINETO_LOG_LEVEL', '6')  # torch.profiler's backend prints two lines per trace otherwise
    torch.manual_seed(0)
    model = create_model(name, img_size=img_size, **(model_kwargs or {})).train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model.num_classes, (batch,))
    step = training_step(model, x, y)
    wall = median_seconds(step, iters, warmup=1)  # the warm-up also creates the momentum buffers
    traces = []
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    shaped = top_level_ops(prof.events())
    for _ in range(3 * iters):  # timed without shapes; up to 3x as many tries for `iters` undisturbed steps
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            step()
            traced_wall = time.perf_counter() - t0
        traces.append((traced_wall, trace_breakdown(shaped, top_level_ops(prof.events()))))
        if sum(t <= UNDISTURBED * wall for t, _ in traces) >= iters:
            break
    usable = [t for t in traces if t[0] <= UNDISTURBED * wall] or traces
    traced_wall, parts = sorted(usable, key=lambda t: t[0])[len(usable) // 2]  # one slow step does not skew it
    traced = parts['time_s']
    traced['forward', 'rest'] += max(traced_wall - sum(traced.values()), 0.0)  # Python and untraced work
    times = _attribute(traced, wall)
    flops = parts['flop']
    total_flop = sum(flops.values())
    gemm_flop = sum(flops[ph, 'gemm'] for ph in PHASES)
    gemm_time = sum(times[ph, 'gemm'] for ph in PHASES)
    ref = ref or reference_rate()
    ceiling = total_flop / (gemm_flop / ref + wall - gemm_time) / ref

    def entry(t: float, f: float) -> dict:
        return {
            'ms': round(1e3 * t, 1),
            'share_pct': round(100 * t / wall, 1),
            'gflop': round(f / 1e9, 3),
            'gflop_s': round(f / t / 1e9, 1) if t > 0 and f > 0 else None,
        }

    return {
        'model': name,
        'model_kwargs': dict(model_kwargs or {}),
        'batch': batch,
        'img_size': img_size,
        'ms_per_step': round(1e3 * wall, 1),
        'img_per_s': round(batch / wall, 2),
        'profiler_overhead_pct': round(100 * (traced_wall / wall - 1), 1),
        'gflop_per_step': round(total_flop / 1e9, 1),
        'gflop_s': round(total_flop / wall / 1e9, 1),
        'pct_of_reference': round(100 * total_flop / wall / ref, 1),
        'ceiling_pct_of_reference': round(100 * ceiling, 1),
        **_shape_ceiling(parts['gemm_calls'], True, total_flop, wall, gemm_time, ref),
        'phases': {
            ph: entry(sum(times[ph, c] for c in CATEGORIES), sum(flops[ph, c] for c in CATEGORIES)) for ph in PHASES
        },
        'categories': {
            c: entry(sum(times[ph, c] for ph in PHASES), sum(flops[ph, c] for ph in PHASES)) for c in CATEGORIES
        },
        'backward_over_forward': round(
            sum(times['backward', c] for c in CATEGORIES) / sum(times['forward', c] for c in CATEGORIES), 2
        ),
    }


def target_ceilings(models: Sequence[dict], training: Sequence[dict] = (), bench: dict | None = None) -> list[dict]:
    """The benchmark issue's targets, as measured and with our model at its ceilings.

    Inference targets use the inference profiles (``models``), training targets the training ones. The
    measured value is the benchmark's (``bench``: a ``bench-cpu.json`` document, whose interleaved rounds
    are steadier than this profile's single pass) where it has the target, else this profile's own. At a
    ceiling our model runs ``ceiling % / achieved %`` times faster (that headroom comes from the profile);
    the peer stays as measured.
    """

    by_metric = {
        'infer_img_s': {m['model']: m for m in models},
        'pct_onednn': {m['model']: m for m in models},
        'train_img_s': {m['model']: m for m in training},
    }
    benched = {t['label']: t['measured'] for t in (bench or {}).get('targets', [])}
    out = []
    for t in TARGETS:
        by_name = by_metric.get(t.metric, {})
        ours = by_name.get(t.model)
        if ours is None:
            continue
        if t.label in benched:
            measured, source = benched[t.label], 'bench'
        elif t.metric == 'pct_onednn':
            measured, source = ours['pct_of_reference'], 'profile'
        elif t.baseline in by_name:
            measured, source = ours['img_per_s'] / by_name[t.baseline]['img_per_s'], 'profile'
        else:
            continue
        at_ceiling = _at_ceiling(measured, ours, ours['ceiling_pct_of_reference'])
        at_shape = _at_ceiling(measured, ours, ours.get('shape_ceiling_pct'))
        out.append(
            {
                'target': t.label,
                'metric': t.metric,
                'minimum': t.minimum,
                'measured': round(measured, 3),
                'measured_by': source,
                'at_ceiling': at_ceiling,
                'at_shape_ceiling': at_shape,
                'reachable_by_gemm_alone': at_ceiling >= t.minimum,
                'verdict': _verdict(t.minimum, measured, at_ceiling, at_shape),
            }
        )
    return out


def _at_ceiling(measured: float, ours: dict, ceiling_pct: float | None) -> float | None:
    """A target's value (a ratio, or a % of the rate) with our model at ``ceiling_pct`` of the rate."""
    if ceiling_pct is None:
        return None
    return round(measured * ceiling_pct / ours['pct_of_reference'], 2)


VERDICTS = {
    'met': 'met here',
    'non-GEMM': 'no: the non-GEMM work caps it even with every GEMM at the 1x1 rate',
    'shapes': 'no: only with GEMMs faster than oneDNN runs these shapes alone',
    'open': "yes: within reach at the GEMM shapes' own rates",
}


def _verdict(minimum: float, measured: float, at_ceiling: float, at_shape: float | None) -> str:
    """Why a target is (not) met: ``met``, ``non-GEMM``, ``shapes`` or ``open`` (see :data:`VERDICTS`)."""
    if measured >= minimum:
        return 'met'
    if at_ceiling < minimum:
        return 'non-GEMM'
    if at_shape is not None and at_shape < minimum:
        return 'shapes'
    return 'open'


def _share_cells(entry: dict, categories: Sequence[str]) -> list[str]:
    cells = []
    for c in categories:
        e = entry['categories'][c]
        cells.append(f'{e["share_pct"]:.1f}' + (f' ({e["gflop_s"]:.0f})' if e['gflop_s'] else ''))
    return cells


_MODEL_COLUMNS = [
    'model',
    'img/s',
    'GFLOP/s',
    '% of 1x1 rate',
    'ceiling %',
    'shape ceiling %',
    'GEMM s in model / alone',
]


def _model_cells(p: dict) -> list[str]:
    shape = '-' if p.get('shape_ceiling_pct') is None else f'{p["shape_ceiling_pct"]:.0f}'
    over = '-' if p.get('gemm_over_isolated') is None else f'{p["gemm_over_isolated"]:.2f}'
    rates = [f'{p["img_per_s"]:.1f}', f'{p["gflop_s"]:.0f}', f'{p["pct_of_reference"]:.0f}']
    return [f'`{p["model"]}`', *rates, f'{p["ceiling_pct_of_reference"]:.0f}', shape, over]


def render(data: dict, out: Path) -> None:
    """``profile-cpu.md`` (inference and training tables, targets) and ``profile-cpu.png`` (time shares)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ref = data['reference_gflop_s']
    shares = [f'{c} % (GFLOP/s)' for c in CATEGORIES]
    rows = [_model_cells(p) + _share_cells(p, CATEGORIES) for p in data['models']]
    lines = ['Inference:', '', *markdown_table(_MODEL_COLUMNS + shares, rows)]
    training = data.get('training') or []
    if training:
        rows = [
            [*_model_cells(p), ' / '.join(f'{p["phases"][ph]["share_pct"]:.0f}' for ph in PHASES)]
            + _share_cells(p, CATEGORIES)
            for p in training
        ]
        header = _MODEL_COLUMNS + ['forward / backward / optimizer %'] + shares
        lines += ['', f'Training step (batch {data["train_batch"]}):', '', *markdown_table(header, rows)]
    if data.get('targets'):
        header = ['target', 'needed', 'measured', 'at the ceiling (1x1 rate)', 'at the shape ceiling', 'reachable?']
        rows = [
            [t['target'], f'{t["minimum"]:g}', f'{t["measured"]:.2f}', f'{t["at_ceiling"]:.2f}']
            + ['-' if t.get('at_shape_ceiling') is None else f'{t["at_shape_ceiling"]:.2f}', VERDICTS[t['verdict']]]
            for t in data['targets']
        ]
        lines += ['', *markdown_table(header, rows)]
    m = data['meta']
    lines += [
        '',
        f'Inference: batch {data["batch"]} at {data["img_size"]} px, fp32, channels_last, reparameterized; share of '
        'the forward time per kind of operation (leaf-module and SDPA timers), with its achieved GFLOP/s. '
        + (
            f'Training: forward + backward + SGD momentum step at batch {data["train_batch"]}, channels_last, not '
            'reparameterized; median step time, split by the median `torch.profiler` trace of the top-level aten '
            'ops (forward, backward under the autograd engine, optimizer): convolutions, GEMMs, attention, '
            'activations and norms keep their traced time and "rest" (small ops, which carry the profiler\'s '
            'overhead) gets what is left of the step; GEMMs are 1x1 convs and linear layers, forward and both '
            'gradients. '
            if training
            else ''
        )
        + f'1x1 rate: channels_last 1024->1024 1x1 conv on 28x28 in the same process, {ref:.0f} GFLOP/s. "Ceiling": '
        'the share of that rate the model would reach if its GEMMs ran exactly at it and everything else took the '
        'time measured; "shape ceiling": the same with each GEMM at the rate its own shape reaches run alone '
        '(every distinct shape of the model timed in isolation: forward, or forward and both gradients); '
        '"measured": the benchmark\'s value (`bench-cpu.json`, interleaved rounds) where it has the target, else '
        'this profile\'s; "at the ceiling": that value with our model sped up by its headroom to the ceiling '
        f'(ceiling % / achieved %), the peer unchanged. Profiled {m["date"]} on {m["cpu"]} ({m["threads"]} threads, '
        f'torch {m["torch"]}), allocator trimming off. Source: `model_cards/results/{out.name}`; `hybrid-zoo profile` '
        'regenerates it.',
    ]
    write_atomic(out.with_suffix('.md'), '\n'.join(lines) + '\n')

    panels = [(f'inference (batch {data["batch"]})', data['models'], CATEGORIES)]
    if training:
        panels.append((f'training step (batch {data["train_batch"]})', training, CATEGORIES))
    rows = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.45 * rows + 1.8), squeeze=False)
    colours = {c: f'C{i}' for i, c in enumerate(CATEGORIES)}
    for ax, (title, entries, categories) in zip(axes[0], panels, strict=True):
        names = [p['model'] for p in entries]
        left = [0.0] * len(names)
        for c in categories:
            share = [p['categories'][c]['share_pct'] for p in entries]
            ax.barh(names, share, left=left, label=c, color=colours.get(c))
            left = [a + b for a, b in zip(left, share, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel('share of CPU time (%)')
        ax.set_title(f'Where the time goes: {title}, {data["img_size"]} px, {m["threads"]} threads', fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=len(labels), fontsize=8, loc='lower center')
    fig.tight_layout(rect=(0, 0.6 / (0.45 * rows + 1.8), 1, 1))
    write_figure_atomic(fig, out.with_suffix('.png'))
    plt.close(fig)


def rerender(path: Path, bench_path: Path) -> dict:
    """Re-check the targets of a saved profile against ``bench_path`` (if it exists) and re-render it."""
    data = json.loads(path.read_text())
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
    data['bench'] = str(bench_path) if bench else None
    data['targets'] = target_ceilings(data['models'], data.get('training') or [], bench)
    write_json_atomic(path, data)
    render(data, path)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    from hybrid_zoo.benchmarks.speed import exec_with_no_trim

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.models = args.models or list(PROFILE_MODELS)
    args.bench = args.bench or str(RESULTS_DIR / 'bench-cpu.json')
    args.out = args.out or str(RESULTS_DIR / 'profile-cpu.json')
    if args.report_only:  # nothing measured: no allocator setting needed
        out = Path(args.out)
        rerender(out, Path(args.bench))
        print(out.with_suffix('.md').read_text())
        return 0
    exec_with_no_trim(['-m', 'hybrid_zoo.benchmarks.profile', *argv])  # the benchmark's allocator setting
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    from tqdm.auto import tqdm

    bench_path = Path(args.bench)
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None

    ref = reference_rate(args.batch_size)
    models, training = [], []
    for name in tqdm(args.models, desc='profile', unit='model'):
        models.append(profile_model(name, args.batch_size, args.img_size, args.iters, ref=ref))
        if args.train:
            training.append(profile_training(name, args.train_batch_size, args.img_size, args.train_iters, ref=ref))
        for kind, p in (('inference', models[-1]), ('training', training[-1] if args.train else None)):
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
        'batch': args.batch_size,
        'img_size': args.img_size,
        'reference_gflop_s': round(ref / 1e9, 1),
        'models': models,
        'train_batch': args.train_batch_size if args.train else None,
        'training': training,
        'bench': str(bench_path) if bench else None,
        'targets': target_ceilings(models, training, bench),
    }
    out = Path(args.out)
    write_json_atomic(out, data)
    render(data, out)
    print(out.with_suffix('.md').read_text())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
