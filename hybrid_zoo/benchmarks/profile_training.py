"""The training step of ``hybrid-zoo profile``: forward + backward + SGD step, filed by aten op from
``torch.profiler`` traces (by phase and kind of operation)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence

import torch
from torch.profiler import ProfilerActivity
from torch.profiler import profile as torch_profile

from hybrid_zoo.benchmarks.profile_ops import (
    CATEGORIES,
    GemmShape,
    conv_kind,
    median_seconds,
    reference_rate,
    shape_ceiling,
)
from hybrid_zoo.benchmarks.speed_worker import training_step
from hybrid_zoo.train.evaluate import create_model

_log = logging.getLogger(__name__)


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
        return conv_kind(weight, inp[1], groups), flop
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
        **shape_ceiling(parts['gemm_calls'], True, total_flop, wall, gemm_time, ref),
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
