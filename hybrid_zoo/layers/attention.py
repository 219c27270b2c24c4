"""Attention building blocks that read and write NCHW feature maps; tokens exist only inside."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_function
from torch import nn

from .conv import ConvNorm, branch_scale, fold_branch_scale
from .fold import fold_bn_before
from .fused import ConvAct, ConvAdd, fusion_enabled, is_exact_gelu


@register_notrace_function  # a layout branch torch.fx cannot trace; kept as one graph leaf
def heads_to_map(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, nh, N, hd) -> (B, nh * hd, H, W) with the spatial size and memory format of ``like`` (B, C, H, W)."""
    B, _, H, W = like.shape
    C = x.shape[1] * x.shape[3]
    x = x.transpose(1, 2).reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, nh, N, hd) -> (B, N, C) -> (B, C, H, W)
    if not like.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous()  # the permute leaves channels_last strides; keep NCHW models NCHW
    return x


class Attention(nn.Module):
    """Global multi-head self-attention over all positions of a map: (B, C, H, W) -> (B, C, H, W).

    Queries come from every position; keys and values optionally from a map pooled ``kv_reduction``
    times by a strided depthwise conv + BN (PVTv2 / NextViT spatial reduction), which keeps attention
    at stride 8 affordable. All projections are 1x1 convs; in channels_last memory the q/k/v token
    views are free and the only copy is the output transpose. No position bias tables: the model
    runs at any input size. ``forward`` reads the head layout from ``num_heads`` and ``head_dim``, not from
    ``dim``, so q, kv and proj may be swapped for narrower ones (the lab's single-head arm does).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        kv_reduction: int = 1,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if dim % head_dim:
            raise ValueError(f'attention width ({dim}) must be a multiple of head_dim ({head_dim})')
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        self.q = nn.Conv2d(dim, dim, 1, **dd)
        if kv_reduction > 1:
            self.kv_pool = ConvNorm(dim, dim, kv_reduction, stride=kv_reduction, padding=0, groups=dim, **dd)
        else:
            self.kv_pool = nn.Identity()
        self.kv = nn.Conv2d(dim, 2 * dim, 1, **dd)
        self.proj = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        nh, hd = self.num_heads, self.head_dim
        q = self.q(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N, A), N = H * W, A = nh * hd
        q = q.reshape(B, H * W, nh, hd).transpose(1, 2)  # (B, N, A) -> (B, nh, N, hd)
        kv = self.kv(self.kv_pool(x)).flatten(2).transpose(1, 2)  # (B, 2A, h, w) -> (B, M, 2A), M = h * w
        k, v = kv.reshape(B, -1, 2, nh, hd).permute(2, 0, 3, 1, 4).unbind(0)  # (B, M, 2A) -> 2 x (B, nh, M, hd)
        attn = F.scaled_dot_product_attention(q, k, v)  # (B, nh, N, hd)
        return self.proj(heads_to_map(attn, x))


class ConvFFN(nn.Module):
    """1x1 expand -> depthwise 3x3 -> GELU -> 1x1 project: (B, C, H, W) -> (B, C, H, W).

    The depthwise conv on the wide hidden layer (PVTv2, CMT) gives the FFN local mixing. ``dw`` may be swapped for
    an ``nn.Identity`` (the lab's ``nodw`` arm): the FFN is then two GEMMs with GELU straight after ``fc1``.
    """

    __constants__ = ['fused']  # a constant to TorchScript, which then compiles only the branch taken

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, **dd)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)
        self.fused = False

    def fuse_post_ops(self) -> None:
        """oneDNN post-ops: GELU into the conv before it (``dw`` when present, else ``fc1``), and the residual add
        into ``fc2`` (``forward(x, residual)``)."""
        if is_exact_gelu(self.act):
            if isinstance(self.dw, nn.Conv2d):
                self.dw = ConvAct(self.dw)
            else:  # dw swapped for an identity (see the class docstring)
                self.fc1 = ConvAct(self.fc1)
            self.act = nn.Identity()
        self.fc2 = ConvAdd(self.fc2)
        self.fused = True

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:  # noqa: UP045
        """``fc2(...)``, plus ``residual`` when given (B, C, H, W)."""
        h = self.act(self.dw(self.fc1(x)))
        if self.fused:
            assert residual is not None, 'a fused ConvFFN adds its residual: call it with one'
            return self.fc2(h, residual)
        out = self.fc2(h)
        return out if residual is None else out + residual


class AttnBlock(nn.Module):
    """Transformer block on a map: local (CPE), global (MHSA), mix (ConvFFN): (B, C, H, W) -> (B, C, H, W).

    Phases: a residual depthwise 3x3 conv gives a conditional position encoding (CPVT,
    https://arxiv.org/abs/2102.10882), then pre-norm attention and pre-norm ConvFFN, each with layer
    scale and stochastic depth. The pre-norms are BatchNorm, not LayerNorm: they fold into the
    following 1x1 convs at inference (measured +2% images/s on the small model, see README).
    """

    __constants__ = ['fused']  # a constant to TorchScript, which then compiles only the branch taken

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        kv_reduction: int = 1,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        ls_init_value: float = 1e-6,
        drop_path: float = 0.0,
        scale: str = 'layerscale',
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        self.cpe = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)
        self.norm1 = nn.BatchNorm2d(dim, **dd)
        self.attn = Attention(dim, head_dim=head_dim, kv_reduction=kv_reduction, **dd)
        self.ls1 = branch_scale(dim, scale, ls_init_value, **dd)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, **dd)
        self.ffn = ConvFFN(dim, mlp_ratio=mlp_ratio, act_layer=act_layer, **dd)
        self.ls2 = branch_scale(dim, scale, ls_init_value, **dd)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.fused = False  # cpe and ffn.fc2 take the residual adds as post-ops (set by reparameterize)

    def reparameterize(self) -> None:
        """Fold the pre-norms into the convs that read them and the layer scales into the output convs."""
        attn, ffn = self.attn, self.ffn
        if isinstance(self.norm1, nn.BatchNorm2d):
            attn.q = fold_bn_before(self.norm1, attn.q)
            if isinstance(attn.kv_pool, ConvNorm):
                pool = attn.kv_pool.fuse()
                attn.kv_pool = fold_bn_before(self.norm1, pool)
            else:
                attn.kv = fold_bn_before(self.norm1, attn.kv)
            self.norm1 = nn.Identity()
        if isinstance(self.norm2, nn.BatchNorm2d):
            ffn.fc1 = fold_bn_before(self.norm2, ffn.fc1)
            self.norm2 = nn.Identity()
        if isinstance(attn.proj, nn.Conv2d):
            attn.proj, self.ls1 = fold_branch_scale(attn.proj, self.ls1)
        if isinstance(ffn.fc2, nn.Conv2d):
            ffn.fc2, self.ls2 = fold_branch_scale(ffn.fc2, self.ls2)
        if fusion_enabled() and isinstance(ffn.fc2, nn.Conv2d) and isinstance(self.cpe, nn.Conv2d):
            ffn.fuse_post_ops()  # oneDNN post-ops: GELU into the conv before it, residual adds into cpe and fc2
            self.cpe = ConvAdd(self.cpe)
            self.fused = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:  # reparameterized and fused: no norms, layer scales or drop path
            x = self.cpe(x, x)
            x = x + self.attn(x)
            return self.ffn(x, x)
        x = x + self.cpe(x)
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
        x = x + self.drop_path2(self.ls2(self.ffn(self.norm2(x))))
        return x
