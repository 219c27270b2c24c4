"""TinyViT's convolutional pieces (https://arxiv.org/abs/2207.10666, timm's ``tiny_vit.py``): the MBConv block of its
first stage and the non-linear downsampling between its stages, with BatchNorm throughout so both fold into plain
convolutions at inference."""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from .conv import ConvNorm
from .fused import ConvAct, ConvAdd, fusion_enabled, is_exact_gelu


def _fuse_conv_act(conv: ConvNorm | nn.Conv2d, act: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``act(conv(x))`` with the BatchNorm folded; where oneDNN's fused convolutions work and ``act`` is exact GELU,
    one :class:`ConvAct` and an identity."""
    if isinstance(conv, ConvNorm):
        conv = conv.fuse()
    if isinstance(conv, nn.Conv2d) and fusion_enabled() and is_exact_gelu(act):
        return ConvAct(conv), nn.Identity()
    return conv, act


class MBConv(nn.Module):
    """1x1 expand -> BN -> GELU -> depthwise 3x3 -> BN -> GELU -> 1x1 project -> BN, residual, GELU:
    (B, C, H, W) -> (B, C, H, W).

    TinyViT's MBConv (after MobileNetV2's inverted residual, https://arxiv.org/abs/1801.04381), including the
    activation after the residual add. The branch ends in a BatchNorm whose weight starts at zero, so it starts
    switched off and then enters normalised (the ``bn0`` branch scale of the conv and attention blocks). Every BN
    folds into the conv before it at ``reparameterize()``.
    """

    __constants__ = ['fused']  # a constant to TorchScript, which then compiles only the branch taken

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        drop_path: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.conv1 = ConvNorm(dim, hidden, 1, **dd)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(hidden, hidden, 3, groups=hidden, **dd)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(hidden, dim, 1, **dd)
        nn.init.zeros_(self.conv3.bn.weight)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.act3 = act_layer()
        self.fused = False  # conv3 takes the residual add as a post-op (set by reparameterize)

    def reparameterize(self) -> None:
        """Fold each BN into its conv (exact in eval mode); where oneDNN's fused convolutions work
        (:mod:`hybrid_zoo.layers.fused`), the first two convs take GELU and the last the residual add as post-ops."""
        self.conv1, self.act1 = _fuse_conv_act(self.conv1, self.act1)
        self.conv2, self.act2 = _fuse_conv_act(self.conv2, self.act2)
        if isinstance(self.conv3, ConvNorm):
            self.conv3 = self.conv3.fuse()
        if fusion_enabled() and isinstance(self.conv3, nn.Conv2d):
            self.conv3 = ConvAdd(self.conv3)
            self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act2(self.conv2(self.act1(self.conv1(x))))
        if self.fused:  # reparameterized: no drop path
            return self.act3(self.conv3(h, x))
        return self.act3(x + self.drop_path(self.conv3(h)))


class PatchMerging(nn.Module):
    """1x1 conv to the new width -> BN -> GELU -> depthwise 3x3 stride 2 -> BN -> GELU -> 1x1 conv -> BN:
    (B, C_in, H, W) -> (B, C_out, ceil(H / 2), ceil(W / 2)).

    TinyViT's downsampling between stages: non-linear where a single 3x3 stride-2 conv + BN is linear, and cheaper
    (``4 C_in C_out + C_out^2`` multiply-adds per output pixel against ``9 C_in C_out``). The output size is the 3x3
    stride-2 conv's, so the stages' maps are unchanged.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        act_layer: type[nn.Module] = nn.GELU,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.conv1 = ConvNorm(in_chs, out_chs, 1, **dd)
        self.act1 = act_layer()
        self.conv2 = ConvNorm(out_chs, out_chs, 3, stride=2, groups=out_chs, **dd)
        self.act2 = act_layer()
        self.conv3 = ConvNorm(out_chs, out_chs, 1, **dd)

    def reparameterize(self) -> None:
        """Fold each BN into its conv (exact in eval mode); where oneDNN's fused convolutions work, the first two
        convs take GELU as a post-op."""
        self.conv1, self.act1 = _fuse_conv_act(self.conv1, self.act1)
        self.conv2, self.act2 = _fuse_conv_act(self.conv2, self.act2)
        if isinstance(self.conv3, ConvNorm):
            self.conv3 = self.conv3.fuse()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
