"""Convolutional building blocks: conv + BN, the residual-branch scales, and the ConvNeXt-style conv block with
BatchNorm."""

from __future__ import annotations

import torch
from timm.layers import DropPath, LayerScale2d
from torch import nn

from .fold import fold_bn_after, fold_scale_after
from .fused import ConvAct, ConvAdd, fusion_enabled, is_exact_gelu

BRANCH_SCALES = ('layerscale', 'bn0')


class ConvNorm(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride).

    ``fuse()`` returns the equivalent single conv (timm's ``reparameterize_model`` calls it).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        padding = kernel_size // 2 if padding is None else padding
        super().__init__()
        self.conv = nn.Conv2d(
            in_chs, out_chs, kernel_size, stride=stride, padding=padding, groups=groups, bias=False, **dd
        )
        self.bn = nn.BatchNorm2d(out_chs, **dd)

    def fuse(self) -> nn.Conv2d:
        return fold_bn_after(self.conv, self.bn)


class RepDWConvNorm(nn.Module):
    """Depthwise kxk conv + BN with a parallel depthwise 3x3 conv + BN, summed: (B, C, H, W) -> (B, C, H, W).

    The 3x3 branch trains beside the large kernel and folds into it at inference (RepLKNet,
    https://arxiv.org/abs/2203.06717; FastViT's ``RepMixer`` / ``MobileOneBlock`` do the same): ``fuse()`` returns one
    depthwise kxk conv computing the sum exactly in eval mode.
    """

    def __init__(self, dim: int, kernel_size: int = 7, device=None, dtype=None) -> None:
        super().__init__()
        if kernel_size < 3:
            raise ValueError(f'a 3x3 branch beside a {kernel_size}x{kernel_size} kernel folds only into kernels >= 3')
        self.large = ConvNorm(dim, dim, kernel_size, groups=dim, device=device, dtype=dtype)
        self.small = ConvNorm(dim, dim, 3, groups=dim, device=device, dtype=dtype)

    def fuse(self) -> nn.Conv2d:
        large, small = self.large.fuse(), self.small.fuse()
        pad = (large.kernel_size[0] - 3) // 2
        with torch.no_grad():
            large.weight += nn.functional.pad(small.weight, (pad, pad, pad, pad))  # centred in the large kernel
            large.bias += small.bias
        return large

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.large(x) + self.small(x)


def branch_scale(dim: int, kind: str = 'layerscale', init_value: float = 1e-6, device=None, dtype=None) -> nn.Module:
    """The scale at the end of a residual branch: LayerScale (a per-channel gamma starting at ``init_value``) or
    ``'bn0'``, a BatchNorm whose weight starts at zero, so the branch starts switched off and then enters normalised
    (TinyViT's MBConv, https://arxiv.org/abs/2207.10666; "zero-gamma", https://arxiv.org/abs/1706.02677). Both fold
    into the conv before them (:func:`fold_branch_scale`)."""
    if kind == 'layerscale':
        return LayerScale2d(dim, init_value, device=device, dtype=dtype)
    if kind == 'bn0':
        bn = nn.BatchNorm2d(dim, device=device, dtype=dtype)
        nn.init.zeros_(bn.weight)
        return bn
    raise ValueError(f'branch_scale must be one of {BRANCH_SCALES}, got {kind!r}')


def fold_branch_scale(conv: nn.Conv2d, scale: nn.Module) -> tuple[nn.Conv2d, nn.Module]:
    """``scale(conv(x))`` as one conv, and what replaces ``scale`` (an identity); anything else is left as it is."""
    if isinstance(scale, LayerScale2d):
        return fold_scale_after(conv, scale.gamma), nn.Identity()
    if isinstance(scale, nn.BatchNorm2d):
        return fold_bn_after(conv, scale), nn.Identity()
    return conv, scale


class ConvBlock(nn.Module):
    """Depthwise 7x7 -> BN -> 1x1 expand -> GELU -> 1x1 project, residual: (B, C, H, W) -> (B, C, H, W).

    ConvNeXt's block (https://arxiv.org/abs/2201.03545) with BatchNorm in place of LayerNorm, so the
    norm folds into the depthwise conv at inference; projections are 1x1 convs, which run about twice
    as fast as ``nn.Linear`` on CPU in channels_last (oneDNN instead of MKL GEMM).
    """

    __constants__ = ['fused']  # a constant to TorchScript, which then compiles only the branch taken

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        kernel_size: int = 7,
        act_layer: type[nn.Module] = nn.GELU,
        ls_init_value: float = 1e-6,
        drop_path: float = 0.0,
        scale: str = 'layerscale',
        rep_dw: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.dw = RepDWConvNorm(dim, kernel_size, **dd) if rep_dw else ConvNorm(dim, dim, kernel_size, groups=dim, **dd)
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)
        self.ls = branch_scale(dim, scale, ls_init_value, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.fused = False  # fc2 takes the residual add as a post-op (set by reparameterize)

    def reparameterize(self) -> None:
        """Fold BN into the depthwise conv and the layer scale into ``fc2`` (exact in eval mode); where oneDNN's
        fused convolutions work (:mod:`hybrid_zoo.layers.fused`), ``fc1`` takes GELU and ``fc2`` the residual add as
        post-ops."""
        if isinstance(self.dw, (ConvNorm, RepDWConvNorm)):
            self.dw = self.dw.fuse()
        if isinstance(self.fc2, nn.Conv2d):
            self.fc2, self.ls = fold_branch_scale(self.fc2, self.ls)
        if fusion_enabled() and isinstance(self.fc2, nn.Conv2d) and is_exact_gelu(self.act):
            self.fc1, self.act, self.fc2 = ConvAct(self.fc1), nn.Identity(), ConvAdd(self.fc2)
            self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.fc1(self.dw(x)))
        if self.fused:  # reparameterized: no layer scale, no drop path
            return self.fc2(h, x)
        return x + self.drop_path(self.ls(self.fc2(h)))
