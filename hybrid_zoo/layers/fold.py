"""Inference-time folding of BatchNorm and per-channel scales into convolutions.

Each helper is exact in eval mode (BN uses its running statistics) and returns a plain ``nn.Conv2d``;
the folded model has fewer kernels and no BN at all.
"""

from __future__ import annotations

import torch
from torch import nn


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BN in eval mode is ``y = a * x + b`` per channel; return ``(a, b)``."""
    std = (bn.running_var + bn.eps).sqrt()
    weight = bn.weight if bn.affine else torch.ones_like(std)
    bias = bn.bias if bn.affine else torch.zeros_like(std)
    a = weight / std
    return a, bias - bn.running_mean * a


def _new_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        device=weight.device,
        dtype=weight.dtype,
    )
    fused.weight.data.copy_(weight)
    fused.bias.data.copy_(bias)
    return fused


@torch.no_grad()
def fold_bn_after(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one conv."""
    a, b = _bn_scale_shift(bn)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(a)
    return _new_conv(conv, conv.weight * a.view(-1, 1, 1, 1), bias * a + b)


@torch.no_grad()
def fold_bn_before(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> nn.Conv2d:
    """``conv(bn(x))`` as one conv.

    Exact only when the conv has no zero padding (padding would see the shift ``b`` as zeros): the
    1x1 projections and the unpadded key/value pooling conv this is used for qualify.
    """
    if any(p != 0 for p in conv.padding):
        raise ValueError(f'cannot fold a BatchNorm into a padded conv (padding={conv.padding})')
    a, b = _bn_scale_shift(bn)
    w = conv.weight  # (C_out, C_in / groups, k, k)
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=w.device, dtype=w.dtype)
    if conv.groups == 1:
        return _new_conv(conv, w * a.view(1, -1, 1, 1), bias + (w * b.view(1, -1, 1, 1)).sum((1, 2, 3)))
    if conv.groups == conv.in_channels == conv.out_channels:  # depthwise: input channel c feeds output c only
        return _new_conv(conv, w * a.view(-1, 1, 1, 1), bias + b * w.sum((1, 2, 3)))
    raise ValueError(f'folding supports groups=1 or depthwise convs, got groups={conv.groups}')


@torch.no_grad()
def fold_scale_after(conv: nn.Conv2d, gamma: torch.Tensor) -> nn.Conv2d:
    """``conv(x) * gamma`` (a per-output-channel layer scale) as one conv."""
    bias = conv.bias if conv.bias is not None else torch.zeros_like(gamma)
    return _new_conv(conv, conv.weight * gamma.view(-1, 1, 1, 1), bias * gamma)
