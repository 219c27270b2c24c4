"""Architecture v2 candidates: each design change as data, registered as timm models only when imported.

Every arm is a change to architecture v1 (``VARIANTS_V1``; ``alt2`` passed the rule and is v2, the registered
design). ``import hybrid_zoo.benchmarks.candidates`` registers ``<architecture>__<arm>`` for every arm below (for
example ``convformer_tiny__sha``; ``convformer_tiny__v1`` is v1 itself), so the speed benchmark times them like any model
(``hybrid-zoo bench --import hybrid_zoo.benchmarks.candidates --models ...``), and ``hybrid-zoo compare`` priced
them on the yardstick (``--model-kwargs``, from :func:`arm_kwargs`). Each arm keeps its architecture's GMACs within
5% of v1 by deepening stage 3 (the saved FLOPs come back as the 1x1-conv GEMMs of extra blocks).

The rejected arms change modules the product's constructor does not parameterise (``LAB_KNOBS``): the lab builds the
product model and swaps those modules (:func:`apply_lab_knobs`), so the product carries no argument that only a
rejected design used, and only the registered arm names build them (``--model-kwargs`` on a product name now
reaches the product's constructor, which refuses these knobs). ``dw5`` (5x5 depthwise convs in the conv blocks, a v1
study rejected before v2; its runs are in ``model_cards/results/fmnist-cpu64-dw5.json``) is built the same way. The
committed results record each arm's parameter count and GMACs; ``tests/benchmarks/test_candidates.py`` rebuilds them.
"""

from __future__ import annotations

import functools

from timm.models import register_model
from torch import nn

from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers import Attention, AttnBlock, ConvBlock, ConvNorm, RepDWConvNorm
from hybrid_zoo.models.convformer_fusion import _create
from hybrid_zoo.models.model import ConvFormerFusion
from hybrid_zoo.models.variants import SIZE_OF, VARIANTS, VARIANTS_V1

# The lab-only design knobs and the value each has in the product (where swapping nothing builds the product).
LAB_KNOBS: dict[str, object] = {
    'attn_ratio': 1.0,  # attention works in attn_ratio x the stage width (a multiple of 16)
    'attn_heads': 0,  # heads of that width (0 = width // head_dim); 1 with a small attn_ratio is SHViT's single head
    'ffn_dw': True,  # the depthwise 3x3 inside the attention blocks' 4x-wide FFN
    'conv_kernel_size': 7,  # the depthwise kernel of the conv blocks
}

# arm -> the design change
ARMS: dict[str, dict] = {
    'v1': {},  # the baseline: attention in every block of the attention stages
    # the depthwise 3x3 taken out of the attention blocks' 4x-wide FFN (GELU straight after fc1)
    'nodw': {'ffn_dw': False},
    # SHViT-style attention: one head on a quarter of the channels
    'sha': {'attn_ratio': 0.25, 'attn_heads': 1},
    'sha_nodw': {'attn_ratio': 0.25, 'attn_heads': 1, 'ffn_dw': False},
    # NextViT / iFormer interleaving: attention in every second block of the attention stages, conv blocks between
    'alt2': {'attn_every': 2},
    'alt2_nodw': {'attn_every': 2, 'ffn_dw': False},
    # early placement only: keys/values pooled 4x (not 2x) at stride 8
    'kv4': {'kv_reductions': (1, 4, 1, 1)},
    # ConvNeXt's 7x7 depthwise kernel cut to 5x5 in the conv blocks (a v1 study, rejected before the v2 screen)
    'dw5': {'conv_kernel_size': 5},
}
SEP = '__'
# one line per arm, for the design-notes table
DESCRIPTIONS: dict[str, str] = {
    'v1': 'architecture v1',
    'nodw': 'FFN without its dw3x3',
    'sha': '1 head on C/4 (SHViT)',
    'sha_nodw': 'sha + nodw',
    'alt2': 'attention every 2nd block (NextViT)',
    'alt2_nodw': 'alt2 + nodw',
    'kv4': 'K/V pooled 4x at stride 8',
    'dw5': '5x5 depthwise convs in the conv blocks',
}


@functools.cache
def arm_kwargs(architecture: str, arm: str) -> dict:
    """The whole architecture (constructor kwargs) of ``arm`` applied to v1 of a registered ``architecture``,
    FLOP-matched: complete, so that it builds the arm whatever the registered defaults are.

    The stage-3 depth is the shallowest (v1's or deeper) whose GMACs at 224 px (attention counted) are within 5% of v1's.
    """
    cfg = VARIANTS_V1[architecture]
    kwargs = {**cfg.kwargs(), **ARMS[arm]}
    ref = _gmacs(cfg.kwargs())
    for extra in range(0, 9):
        depths = (*cfg.depths[:2], cfg.depths[2] + extra, cfg.depths[3])
        if abs(_gmacs({**kwargs, 'depths': depths}) / ref - 1) < 0.05:
            return {**kwargs, 'depths': depths}
    raise ValueError(f'{architecture} {arm}: no stage-3 depth up to +8 blocks matches the GMACs of v1 within 5%')


def _gmacs(kwargs: dict) -> float:
    product = {k: v for k, v in kwargs.items() if k not in LAB_KNOBS}
    lab = {k: v for k, v in kwargs.items() if k in LAB_KNOBS}
    return count_macs(apply_lab_knobs(ConvFormerFusion(**product), **lab).eval(), (3, 224, 224)).gmacs


def attention_width(width: int, attn_ratio: float) -> int:
    """Channels attention works in for a stage of ``width`` channels: ``attn_ratio * width``, a multiple of 16."""
    if not 0 < attn_ratio <= 1:
        raise ValueError(f'attn_ratio must be in (0, 1], got {attn_ratio}')
    return width if attn_ratio == 1 else max(16, round(width * attn_ratio / 16) * 16)


def apply_lab_knobs(
    model: ConvFormerFusion,
    attn_ratio: float = 1.0,
    attn_heads: int = 0,
    ffn_dw: bool = True,
    conv_kernel_size: int = 7,
) -> ConvFormerFusion:
    """Swap the modules of a freshly built ``model`` that the lab-only knobs change, in place; return ``model``.

    Each swapped module takes the place (and parameter names) of the one it replaces and is initialised as the
    model's constructor initialises its own, so the result has the parameters the arm was measured with. At the
    product values (``LAB_KNOBS``) nothing is swapped.

    Args:
        model: A model as ``ConvFormerFusion`` builds it (not reparameterized).
        attn_ratio: Attention works in ``attn_ratio`` x the stage width, a multiple of 16; 1 = the full width.
        attn_heads: Heads of that width (0 = width // head_dim).
        ffn_dw: Keep the depthwise 3x3 of the attention blocks' FFN; ``False`` swaps it for an identity.
        conv_kernel_size: Depthwise kernel of the conv blocks (odd).

    Raises:
        ValueError: A knob out of its range, or an attention width that does not split into whole heads.
    """
    if conv_kernel_size < 1 or conv_kernel_size % 2 == 0:
        raise ValueError(f'conv_kernel_size must be a positive odd number, got {conv_kernel_size}')
    if attn_heads < 0:
        raise ValueError(f'attn_heads must be >= 0, got {attn_heads}')
    attention_width(64, attn_ratio)  # checks the ratio even when no stage attends
    swapped: list[nn.Module] = []
    for stage in model.stages:
        for block in stage.blocks:
            if isinstance(block, AttnBlock):
                if attn_ratio != 1 or attn_heads:
                    swapped += _narrow_attention(block.attn, attn_ratio, attn_heads)
                if not ffn_dw:
                    block.ffn.dw = nn.Identity()
            elif isinstance(block, ConvBlock) and conv_kernel_size != LAB_KNOBS['conv_kernel_size']:
                block.dw = _depthwise(block.dw, conv_kernel_size)
                swapped.append(block.dw)
    for module in swapped:
        module.apply(ConvFormerFusion._init_weights)
    return model


def _narrow_attention(attn: Attention, attn_ratio: float, attn_heads: int) -> list[nn.Module]:
    """Project q, k and v of ``attn`` to ``attention_width`` channels in ``attn_heads`` heads (``proj`` maps them
    back); returns the new convs."""
    dim, head_dim = attn.q.in_channels, attn.head_dim
    width = attention_width(dim, attn_ratio)
    if not attn_heads and width % head_dim:
        raise ValueError(f'attention width ({width}) must be a multiple of head_dim ({head_dim})')
    heads = attn_heads or width // head_dim
    if width % heads:
        raise ValueError(f'attention width {width} must split into whole heads: got num_heads {heads}')
    dd = {'device': attn.q.weight.device, 'dtype': attn.q.weight.dtype}
    attn.q, attn.kv, attn.proj = (
        nn.Conv2d(dim, width, 1, **dd),
        nn.Conv2d(dim, 2 * width, 1, **dd),
        nn.Conv2d(width, dim, 1, **dd),
    )
    attn.num_heads, attn.head_dim = heads, width // heads
    return [attn.q, attn.kv, attn.proj]


def _depthwise(dw: nn.Module, kernel_size: int) -> nn.Module:
    """A conv block's depthwise conv + BN (with its folding 3x3 branch if it has one) at ``kernel_size``."""
    conv = dw.large.conv if isinstance(dw, RepDWConvNorm) else dw.conv
    dd = {'device': conv.weight.device, 'dtype': conv.weight.dtype}
    if isinstance(dw, RepDWConvNorm):
        return RepDWConvNorm(conv.in_channels, kernel_size, **dd)
    return ConvNorm(conv.in_channels, conv.in_channels, kernel_size, groups=conv.in_channels, **dd)


def build_arm(architecture: str, **kwargs) -> ConvFormerFusion:
    """``architecture`` built with ``kwargs`` through the registered factory, then the lab knobs among them applied."""
    lab = {k: kwargs.pop(k) for k in LAB_KNOBS if k in kwargs}
    model = apply_lab_knobs(_create(architecture, pretrained=False, **kwargs), **lab)
    # config.json's model_args rebuild the arm through its entrypoint: the product's factory records the variant
    # table's fields only, so the v3 arms' product knobs are recorded here
    knobs = {k: kwargs[k] for change in ARMS_V3.values() for k in change if k in kwargs}
    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}
    model._model_args = {**model._model_args, **knobs, **lab}
    return model


def _entrypoint(architecture: str, arm: str):
    def create(pretrained: bool = False, **kwargs):
        return build_arm(architecture, **dict(arm_kwargs(architecture, arm), **kwargs))

    create.__name__ = create.__qualname__ = f'{architecture}{SEP}{arm}'
    return create


# Architecture v3 candidates: changes to the registered v2, each FLOP-matched to v2 (arm_kwargs_v3) and priced against
# it by the rule in docs/reports/architecture-v3.md, written before the runs. bn0 and repdw fold away at deployment,
# so the deployed model has v2's GMACs exactly (tests/models/test_v3_candidates.py). A value given as a dict is per
# size (SIZE_OF).
ARMS_V3: dict[str, dict] = {
    # TinyViT's MBConv: a zero-initialised BatchNorm ends each residual branch instead of LayerScale 1e-6
    'bn0': {'branch_scale': 'bn0'},
    # RepLKNet / FastViT: a train-time depthwise 3x3 beside each 7x7, folded into it
    'repdw': {'rep_dw': True},
    # the activation the x86 int8 flow fuses into a quantized conv (torchao's qconv post-ops: relu, hardtanh,
    # hardswish, silu; GELU only into a quantized linear)
    'silu': {'act_layer': 'silu'},
    # the two that passed the screen and fold to v2's graph, together; then with the int8 activation
    'bn0_repdw': {'branch_scale': 'bn0', 'rep_dw': True},
    'bn0_repdw_silu': {'branch_scale': 'bn0', 'rep_dw': True, 'act_layer': 'silu'},
    # TinyViT's non-linear downsampling (1x1-BN-GELU, dw3x3 s2-BN-GELU, 1x1-BN) at the start of stages 2-4
    'nlds': {'downsample': 'patch_merging'},
    # TinyViT's first stage: MBConv blocks (1x1 x4-BN-GELU, dw3x3-BN-GELU, 1x1-BN from zero, residual, GELU)
    'mb1': {'first_stage': 'mbconv'},
    # fewer, wider stage-3 blocks: about 1.25x the width in whole 32-channel heads (small: 13 heads, 1.3x; at 12 no
    # depth of its mid placement comes within 4% of v2's GMACs), the depth the one closest to v2's GMACs
    'wide3': {'widths': {'tiny': (64, 128, 320, 384), 'small': (64, 128, 416, 512), 'base': (96, 192, 480, 576)}},
}
DESCRIPTIONS.update(
    {
        'bn0': 'zero-init BN branch scale (TinyViT)',
        'repdw': 'train-time dw3x3 beside the dw7x7, folded',
        'silu': 'SiLU (int8-fusable) for GELU',
        'bn0_repdw': 'bn0 + repdw (both fold to v2)',
        'bn0_repdw_silu': 'bn0 + repdw + silu',
        'nlds': 'non-linear downsampling (TinyViT), fewer GMACs, depths kept',
        'mb1': 'MBConv first stage (TinyViT), depths kept',
        'wide3': 'stage 3 ~1.25x wider, fewer blocks at equal GMACs',
    }
)


@functools.cache
def arm_kwargs_v3(architecture: str, arm: str) -> dict:
    """The whole architecture (constructor kwargs) of v3 ``arm`` applied to the registered (v2) ``architecture``,
    FLOP-matched: complete, so that it builds the arm whatever the registered defaults are.

    The stage-3 depth stays v2's where that keeps the GMACs at 224 px (attention counted) within 5% of v2's (an arm
    changes one thing where it can); otherwise it is the depth whose GMACs are closest to v2's, which must be within 5%.
    """
    cfg = VARIANTS[architecture]
    change = {k: v[SIZE_OF[architecture]] if isinstance(v, dict) else v for k, v in ARMS_V3[arm].items()}
    kwargs = {**cfg.kwargs(), **change}
    ref = _registered_gmacs(architecture)

    def ratio(depth: int) -> float:
        return _gmacs({**kwargs, 'depths': (*cfg.depths[:2], depth, cfg.depths[3])}) / ref

    depth, most = cfg.depths[2], 2 * cfg.depths[2]
    ratios = {depth: ratio(depth)}
    if abs(ratios[depth] - 1) >= 0.05:
        step = -1 if ratios[depth] > 1 else 1
        while 1 <= depth + step <= most and (ratios[depth] - 1) * step < 0:  # GMACs grow with depth: walk across v2's
            depth += step
            ratios[depth] = ratio(depth)
        depth = min(ratios, key=lambda d: (abs(ratios[d] - 1), d))
    if abs(ratios[depth] - 1) >= 0.05:
        raise ValueError(
            f'{architecture} {arm}: no stage-3 depth from 1 to {most} blocks matches the GMACs of v2 within 5% '
            f'(closest: {depth} blocks, {ratios[depth]:.3f}x)'
        )
    return {**kwargs, 'depths': (*cfg.depths[:2], depth, cfg.depths[3])}


@functools.cache
def _registered_gmacs(architecture: str) -> float:
    return _gmacs(VARIANTS[architecture].kwargs())


def _entrypoint_v3(architecture: str, arm: str):
    def create(pretrained: bool = False, **kwargs):
        return build_arm(architecture, **dict(arm_kwargs_v3(architecture, arm), **kwargs))

    create.__name__ = create.__qualname__ = f'{architecture}{SEP}{arm}'
    return create


CANDIDATES: tuple[str, ...] = tuple(
    f'{a}{SEP}{arm}' for a in VARIANTS_V1 for arm in ARMS if arm != 'kv4' or VARIANTS_V1[a].fusion == 'early'
)
CANDIDATES_V3: tuple[str, ...] = tuple(f'{a}{SEP}{arm}' for a in VARIANTS for arm in ARMS_V3)
for _n in CANDIDATES:
    _a, _arm = _n.split(SEP)
    globals()[_n] = register_model(_entrypoint(_a, _arm))
for _n in CANDIDATES_V3:
    _a, _arm = _n.split(SEP)
    globals()[_n] = register_model(_entrypoint_v3(_a, _arm))
