"""Parameter and multiply-accumulate counts, attention included.

``torch.utils.flop_counter.FlopCounterMode`` has no CPU formula for
``scaled_dot_product_attention`` (on CPU the op dispatches to kernels the counter does not know), so a
stock count silently drops attention: the early/mid/late placements then look FLOP-matched when they
are 11-14% apart. :func:`count_macs` counts attention explicitly, with the same formula the counter
uses for the CUDA flash/efficient kernels: ``2 * B * nh * Nq * Nk * (hd_qk + hd_v)`` FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class MacCount:
    """Multiply-accumulates of one forward pass, in GMACs (1 MAC = 2 FLOPs)."""

    gmacs: float  # everything, attention included
    attention_gmacs: float  # the scaled_dot_product_attention share of ``gmacs``


def sdpa_flops(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> int:
    """FLOPs of ``softmax(q @ k^T) @ v``: two batched matmuls (softmax itself is not counted)."""
    *batch, n_q, d_qk = query.shape
    n_k, d_v = key.shape[-2], value.shape[-1]
    return 2 * math.prod(batch) * n_q * n_k * (d_qk + d_v)


@contextmanager
def _counting_sdpa(counter: FlopCounterMode, sink: list[int], counted_inside: list[int]):
    """Route ``F.scaled_dot_product_attention`` through a wrapper that records its FLOPs.

    Depending on the backend the counter sees SDPA as nothing (fused CPU kernels) or as the matmuls of
    its math decomposition; whatever it saw inside the call is recorded so it can be replaced.
    """
    original: Callable = F.scaled_dot_product_attention

    def counted(query, key, value, *args, **kwargs):
        sink.append(sdpa_flops(query, key, value))
        before = counter.get_total_flops()
        out = original(query, key, value, *args, **kwargs)
        counted_inside.append(counter.get_total_flops() - before)
        return out

    F.scaled_dot_product_attention = counted
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224), batch_size: int = 1) -> MacCount:
    """GMACs per image of ``model`` in eval mode at ``input_size`` (C, H, W), attention included.

    Attention is counted once, by the formula: what the counter itself saw inside each attention call
    (zero, or the decomposed matmuls) is replaced, never added to.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(batch_size, *input_size, dtype=param.dtype if param is not None else torch.float32)
    sdpa: list[int] = []
    inside: list[int] = []
    counter = FlopCounterMode(display=False)
    with counter, _counting_sdpa(counter, sdpa, inside):
        model(x)
    model.train(was_training)
    flops = counter.get_total_flops() - sum(inside) + sum(sdpa)
    return MacCount(gmacs=flops / 2 / batch_size / 1e9, attention_gmacs=sum(sdpa) / 2 / batch_size / 1e9)
