"""Architecture v2 candidates: each design change as data, registered as timm models only when imported.

Every arm is a change to architecture v1 (``VARIANTS_V1``; ``alt2`` passed the rule and is v2, the registered
design). ``import hybrid_zoo.benchmarks.candidates`` registers ``<architecture>__<arm>`` for every arm below (for
example ``convformer_tiny__sha``; ``convformer_tiny__v1`` is v1 itself), so the speed benchmark times them like any model
(``hybrid-zoo bench --import hybrid_zoo.benchmarks.candidates --models ...``) and ``hybrid-zoo compare`` prices
them on the yardstick (``--model-kwargs``, from :func:`arm_kwargs`). Each arm keeps its architecture's GMACs within
5% of v1 by deepening stage 3 (the saved FLOPs come back as the 1x1-conv GEMMs of extra blocks).
"""

from __future__ import annotations

import functools

from timm.models import register_model

from hybrid_zoo.flops import count_macs
from hybrid_zoo.models.convformer_fusion import _create
from hybrid_zoo.models.model import ConvFormerFusion
from hybrid_zoo.models.variants import VARIANTS, VARIANTS_V1

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
    return count_macs(ConvFormerFusion(**kwargs).eval(), (3, 224, 224)).gmacs


def _entrypoint(architecture: str, arm: str):
    def create(pretrained: bool = False, **kwargs):
        return _create(
            architecture,
            pretrained=False,
            **dict(arm_kwargs(architecture, arm), **kwargs),
        )

    create.__name__ = create.__qualname__ = f'{architecture}{SEP}{arm}'
    return create


# Architecture v3 candidates: changes to the registered v2 that fold away at deployment, so the deployed model has
# v2's GMACs exactly (tests/models/test_v3_candidates.py); each is priced against v2 by the rule in
# docs/reports/architecture-v3.md, written before the runs.
ARMS_V3: dict[str, dict] = {
    # TinyViT's MBConv: a zero-initialised BatchNorm ends each residual branch instead of LayerScale 1e-6
    'bn0': {'branch_scale': 'bn0'},
    # RepLKNet / FastViT: a train-time depthwise 3x3 beside each 7x7, folded into it
    'repdw': {'rep_dw': True},
    # the activation the x86 int8 flow fuses into a quantized conv (torchao's qconv post-ops: relu, hardtanh,
    # hardswish, silu; GELU only into a quantized linear)
    'silu': {'act_layer': 'silu'},
    'bn0_repdw_silu': {'branch_scale': 'bn0', 'rep_dw': True, 'act_layer': 'silu'},
}
DESCRIPTIONS.update(
    {
        'bn0': 'zero-init BN branch scale (TinyViT)',
        'repdw': 'train-time dw3x3 beside the dw7x7, folded',
        'silu': 'SiLU (int8-fusable) for GELU',
        'bn0_repdw_silu': 'bn0 + repdw + silu',
    }
)


def arm_kwargs_v3(architecture: str, arm: str) -> dict:
    """The whole architecture of v3 ``arm`` applied to the registered (v2) ``architecture``."""
    return {**VARIANTS[architecture].kwargs(), **ARMS_V3[arm]}


def _entrypoint_v3(architecture: str, arm: str):
    def create(pretrained: bool = False, **kwargs):
        return _create(architecture, pretrained=False, **dict(arm_kwargs_v3(architecture, arm), **kwargs))

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
