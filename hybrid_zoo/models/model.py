"""ConvFormerFusion: a 4-stage conv + attention classifier with the fusion point as a parameter.

stem (stride 4) -> 4 stages (strides 4, 8, 16, 32; conv blocks before the fusion point, attention
blocks from it on) -> head (global average pool -> LayerNorm -> Linear). Every tensor between
modules is an NCHW map; attention blocks tokenise internally, so any input size >= 32 px works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from timm.layers import NormMlpClassifierHead, get_act_layer, register_notrace_function, trunc_normal_
from timm.models import checkpoint_seq
from timm.models._features import feature_take_indices
from torch import nn

from ..layers import AttnBlock, ConvBlock, ConvNorm, MBConv, PatchMerging
from ..normalization import rgb_to_luma
from .variants import FIRST_ATTENTION_STAGE

__all__ = ['DOWNSAMPLES', 'FIRST_STAGES', 'MIN_INPUT_SIZE', 'ConvFormerFusion', 'ConvFormerStage']

MIN_INPUT_SIZE = 32  # one pixel at stride 32
DOWNSAMPLES = ('conv', 'patch_merging')  # a 3x3 stride-2 conv + BN (v2) | TinyViT's non-linear PatchMerging
FIRST_STAGES = ('conv', 'mbconv')  # stage 1 of conv blocks (v2) | of TinyViT's MBConv blocks


@register_notrace_function  # shape checks are not traceable by torch.fx; keep the call as a graph leaf
def check_input(
    x: torch.Tensor,
    in_chans: int,
    min_size: int = MIN_INPUT_SIZE,
    dtype: Optional[torch.dtype] = None,  # noqa: UP045  (TorchScript reads Optional, not X | None)
    training: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty float (B, in_chans, H, W) tensor with H, W >= 32, of the
    model's ``dtype`` (any float dtype under autocast), and, in training, with more than one value per channel at
    stride 32 (what BatchNorm needs to compute batch statistics)."""
    if torch.jit.is_tracing():  # ONNX/trace export: shapes are symbolic, the checks ran in eager already
        return
    if x.dim() != 4:
        raise ValueError(f'expected a 4-D (B, {in_chans}, H, W) image tensor, got {x.dim()}-D shape {list(x.shape)}')
    if not x.is_floating_point():
        raise ValueError(f'expected a floating point tensor normalized with mean/std, got dtype {x.dtype}')
    if x.shape[1] != in_chans and not (in_chans == 1 and x.shape[1] == 3):
        also = ' or 3, read as their luma' if in_chans == 1 else ''
        raise ValueError(f'expected {in_chans} input channels{also} (B, {in_chans}, H, W), got shape {list(x.shape)}')
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f'expected height and width >= {min_size}, got {x.shape[2]}x{x.shape[3]} (shape {list(x.shape)})'
        )
    if x.shape[0] == 0:
        raise ValueError(f'expected a batch of at least one image, got an empty batch (shape {list(x.shape)})')
    autocast = False
    if not torch.jit.is_scripting():  # TorchScript's is_autocast_enabled takes no device
        autocast = torch.is_autocast_enabled(x.device.type)
    if dtype is not None and x.dtype != dtype and not autocast:
        raise ValueError(
            f"expected dtype {dtype} (the dtype of the model's weights), got {x.dtype}: cast the input "
            f'(x.to({dtype})) or the model (model.to({x.dtype})), or run under torch.autocast'
        )
    last = x.shape[0] * ((x.shape[2] + 31) // 32) * ((x.shape[3] + 31) // 32)
    if training and last < 2:
        raise ValueError(
            f'training needs more than one value per channel at stride 32 for BatchNorm, got batch {x.shape[0]} at '
            f'{x.shape[2]}x{x.shape[3]} (a 1x1 map): use a batch of 2 or more, an input over 32 px, or eval()'
        )


@register_notrace_function  # a shape test is not traceable by torch.fx; keep the call as a graph leaf
def luma_if_rgb(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """A grayscale model's view of its input: a 3-channel ``x`` becomes its luma (what ``Image.convert('L')``
    gives, up to PIL's rounding), so an RGB pipeline such as transformers' ``pipeline('image-classification')`` runs
    a one-channel model; any other input is returned as it is."""
    if in_chans == 1 and x.shape[1] == 3 and not torch.jit.is_tracing():
        return rgb_to_luma(x)
    return x


def has_attention(index: int, depth: int, attention_stage: bool, attn_every: int) -> bool:
    """Whether block ``index`` of a stage of ``depth`` blocks is an attention block: in an attention stage every
    ``attn_every``-th block, counted from the stage's last."""
    return attention_stage and (depth - 1 - index) % attn_every == 0


class ConvFormerStage(nn.Module):
    """Optional stride-2 downsampling, then blocks: (B, C_in, H, W) -> (B, C, H / s, W / s).

    The downsampling is a 3x3 stride-2 conv + BN (``downsample_layer='conv'``) or TinyViT's PatchMerging
    (``'patch_merging'``); the blocks without attention are conv blocks (``conv_block='conv'``) or TinyViT's MBConv
    (``'mbconv'``).
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        depth: int,
        attention: bool,
        downsample: bool,
        head_dim: int = 32,
        kv_reduction: int = 1,
        mlp_ratio: float = 4.0,
        act_layer: type[nn.Module] = nn.GELU,
        ls_init_value: float = 1e-6,
        drop_path_rates: Sequence[float] = (),
        attn_every: int = 1,
        branch_scale: str = 'layerscale',
        rep_dw: bool = False,
        downsample_layer: str = 'conv',
        conv_block: str = 'conv',
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if downsample_layer not in DOWNSAMPLES:
            raise ValueError(f'downsample_layer must be one of {DOWNSAMPLES}, got {downsample_layer!r}')
        if conv_block not in FIRST_STAGES:
            raise ValueError(f'conv_block must be one of {FIRST_STAGES}, got {conv_block!r}')
        self.grad_checkpointing = False
        if not downsample:
            self.downsample = nn.Identity()
        elif downsample_layer == 'patch_merging':
            self.downsample = PatchMerging(in_chs, out_chs, act_layer=act_layer, **dd)
        else:
            self.downsample = ConvNorm(in_chs, out_chs, 3, stride=2, **dd)
        dpr = list(drop_path_rates) or [0.0] * depth
        blocks = []
        for i in range(depth):
            if has_attention(i, depth, attention, attn_every):
                block = AttnBlock(
                    out_chs,
                    head_dim=head_dim,
                    kv_reduction=kv_reduction,
                    mlp_ratio=mlp_ratio,
                    act_layer=act_layer,
                    ls_init_value=ls_init_value,
                    drop_path=dpr[i],
                    scale=branch_scale,
                    **dd,
                )
            elif conv_block == 'mbconv':
                block = MBConv(out_chs, mlp_ratio=mlp_ratio, act_layer=act_layer, drop_path=dpr[i], **dd)
            else:
                block = ConvBlock(
                    out_chs,
                    mlp_ratio=mlp_ratio,
                    act_layer=act_layer,
                    ls_init_value=ls_init_value,
                    drop_path=dpr[i],
                    scale=branch_scale,
                    rep_dw=rep_dw,
                    **dd,
                )
            blocks.append(block)
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class ConvFormerFusion(nn.Module):
    """Hybrid conv/attention classifier: (B, in_chans, H, W) float -> (B, num_classes) logits.

    Args:
        widths: channels of the four stages.
        depths: blocks in the four stages.
        fusion: 'early' | 'mid' | 'late': attention from stage 2, 3 or 4 (stride 8, 16 or 32) on.
        head_dim: channels per attention head.
        kv_reductions: per-stage pooling factor of keys/values in attention stages.
        mlp_ratio: hidden expansion of conv blocks and FFNs.
        in_chans, num_classes, global_pool, drop_rate, drop_path_rate: as everywhere in timm.
        ls_init_value: initial layer scale.
        act_layer: activation name understood by ``timm.layers.get_act_layer``.
        attn_every: in attention stages, every ``attn_every``-th block (counted from each stage's last) has
            attention and the others are conv blocks (NextViT / iFormer interleaving); 1 = all.
        branch_scale: the scale ending each residual branch: 'layerscale' (from ``ls_init_value``) or 'bn0', a
            BatchNorm whose weight starts at zero; both fold away at inference.
        rep_dw: a train-time depthwise 3x3 beside each conv block's large depthwise kernel, folded into it by
            ``reparameterize()``.
        downsample: the stride-2 downsampling at the start of stages 2-4: 'conv' (a 3x3 conv + BN) or
            'patch_merging' (TinyViT's 1x1 conv, depthwise 3x3 stride 2 and 1x1 conv, each with BN, GELU between).
        first_stage: the blocks of stage 1: 'conv' (conv blocks) or 'mbconv' (TinyViT's MBConv blocks, whose
            branch ends in a zero-initialised BN whatever ``branch_scale`` says).
        device, dtype: where and in which dtype every parameter and buffer is created (``device='meta'``
            builds without memory, ``dtype=torch.bfloat16`` a bf16 model), as ``timm.create_model`` passes them.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256, 384),
        depths: Sequence[int] = (2, 2, 8, 2),
        fusion: str = 'mid',
        head_dim: int = 32,
        kv_reductions: Sequence[int] = (1, 2, 1, 1),
        mlp_ratio: float = 4.0,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = 'avg',
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float = 1e-6,
        act_layer: str = 'gelu',
        attn_every: int = 1,
        branch_scale: str = 'layerscale',
        rep_dw: bool = False,
        downsample: str = 'conv',
        first_stage: str = 'conv',
        device=None,
        dtype=None,
    ) -> None:
        dd = {'device': device, 'dtype': dtype}
        super().__init__()
        if fusion not in FIRST_ATTENTION_STAGE:
            raise ValueError(f'fusion must be one of {list(FIRST_ATTENTION_STAGE)}, got {fusion!r}')
        if attn_every < 1:
            raise ValueError(f'attn_every must be >= 1, got {attn_every}')
        if downsample not in DOWNSAMPLES:
            raise ValueError(f'downsample must be one of {DOWNSAMPLES}, got {downsample!r}')
        if first_stage not in FIRST_STAGES:
            raise ValueError(f'first_stage must be one of {FIRST_STAGES}, got {first_stage!r}')
        if len(widths) != 4 or len(depths) != 4 or len(kv_reductions) != 4:
            raise ValueError(f'expected 4 widths, depths and kv_reductions, got {widths}, {depths}, {kv_reductions}')
        act = get_act_layer(act_layer)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.fusion = fusion
        self.grad_checkpointing = False
        first_attn = FIRST_ATTENTION_STAGE[fusion]

        self.stem = nn.Sequential(
            ConvNorm(in_chans, widths[0] // 2, 3, stride=2, **dd),
            act(),
            ConvNorm(widths[0] // 2, widths[0], 3, stride=2, **dd),
        )
        # plain floats for the blocks, computed on CPU even under a `with torch.device('meta'):` build
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))
        stages, in_chs = [], widths[0]
        self.feature_info = []
        for i, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            stages.append(
                ConvFormerStage(
                    in_chs,
                    width,
                    depth,
                    attention=i >= first_attn,
                    downsample=i > 0,
                    head_dim=head_dim,
                    kv_reduction=kv_reductions[i],
                    mlp_ratio=mlp_ratio,
                    act_layer=act,
                    ls_init_value=ls_init_value,
                    drop_path_rates=dpr[i].tolist(),
                    attn_every=attn_every,
                    branch_scale=branch_scale,
                    rep_dw=rep_dw,
                    downsample_layer=downsample,
                    conv_block=first_stage if i == 0 else 'conv',
                    **dd,
                )
            )
            in_chs = width
            self.feature_info.append(dict(num_chs=width, reduction=4 * 2**i, module=f'stages.{i}'))
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = widths[-1]
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer='layernorm2d',
            **dd,
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)'
            if coarse
            else [(r'^stages\.(\d+)\.downsample', (0,)), (r'^stages\.(\d+)\.blocks\.(\d+)', None)],
        )

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # Layer scales (1-D, so timm already skips them) listed for optimizers that only read this set.
        return {name for name, _ in self.named_parameters() if name.endswith('.gamma')}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def set_input_size(self, img_size=None, **kwargs) -> None:
        """No-op: nothing in the model depends on the input size (no position tables, no windows)."""

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = 'NCHW',
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at strides 4, 8, 16, 32: list of (B, widths[i], ceil(H / s), ceil(W / s)).

        ``indices`` selects stages (an int n = the last n); the final tensor equals ``forward_features``.
        ``norm`` is accepted for timm compatibility: the model has no norm between stages and head.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_input(x, self.in_chans, dtype=self.head.norm.weight.dtype, training=self.training)
        x = luma_if_rgb(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages if torch.jit.is_scripting() or not stop_early else self.stages[: max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last one ``indices`` selects (and the head); return the kept indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[: max_index + 1]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, num_features, ceil(H / 32), ceil(W / 32))."""
        check_input(x, self.in_chans, dtype=self.head.norm.weight.dtype, training=self.training)
        x = luma_if_rgb(x, self.in_chans)
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, num_features, h, w) -> (B, num_classes) logits, or (B, num_features) if ``pre_logits``."""
        return self.head(x, pre_logits=True) if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
