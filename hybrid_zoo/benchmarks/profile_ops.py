"""What ``hybrid-zoo profile`` files time under (kinds of operation), GEMM shapes, and GEMMs timed alone."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

_log = logging.getLogger(__name__)


CATEGORIES = ('gemm', 'depthwise', 'dense kxk', 'attention', 'activation', 'norm', 'rest')


_ACTIVATION_NAMES = {'gelu', 'gelutanh', 'quickgelu', 'relu', 'relu6', 'silu', 'swish', 'hardswish', 'hardsigmoid'}
_ACTIVATION_NAMES |= {'sigmoid', 'mish', 'starrelu', 'hardswishme', 'swishme'}


def conv_kind(weight: Sequence[int], in_channels: int, groups: int) -> str:
    """``depthwise``, ``gemm`` (1x1, one group) or ``dense kxk`` for a conv's weight shape and groups."""
    if groups == in_channels and in_channels > 1 and weight[1] == 1:
        return 'depthwise'
    if tuple(weight[2:]) == (1, 1) and groups == 1:
        return 'gemm'
    return 'dense kxk'


def _category(module) -> str | None:

    activations = (nn.GELU, nn.ReLU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.ReLU6, nn.Hardsigmoid, nn.Mish)

    if isinstance(module, nn.Conv2d):
        return conv_kind(module.weight.shape, module.in_channels, module.groups)
    if isinstance(module, nn.Linear):
        return 'gemm'
    if isinstance(module, activations) or type(module).__name__.lower() in _ACTIVATION_NAMES:  # timm's own classes
        return 'activation'
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or 'Norm' in type(module).__name__:
        return 'norm'
    return None


def _flop(module, out) -> float:
    """Multiply-adds x 2 of a conv or linear, from its output."""

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2.0 * out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2.0 * out.numel() * module.in_features
    return 0.0


class LeafTimers:
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

    if isinstance(module, nn.Conv2d):
        return GemmShape('conv', tuple(x.shape), module.out_channels, module.stride[0])
    return GemmShape('linear', tuple(x.shape), module.out_features)


def isolated_seconds(shape: GemmShape, train: bool = False, iters: int = 5) -> float:
    """Median seconds of one GEMM of ``shape`` run alone: forward, or forward + both gradients if ``train``.

    This is the rate oneDNN / the BLAS reach on exactly that shape, the fair ceiling for a model's GEMMs:
    small channel counts run below the 1024-channel reference rate whatever the model around them does.
    """

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


def shape_ceiling(calls: Counter, train: bool, total_flop: float, wall: float, gemm_s: float, ref: float) -> dict:
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

    conv = nn.Conv2d(1024, 1024, 1, bias=False).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 1024, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        seconds = median_seconds(lambda: conv(x), iters)
    return 2 * batch * 28 * 28 * 1024 * 1024 / seconds
