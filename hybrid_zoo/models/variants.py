"""The nine architectures as data: three sizes x three fusion placements. No torch import here.

Placement = the first stage with attention in the 4-stage backbone (output strides 4/8/16/32):
early = stage 2 (stride 8), mid = stage 3 (stride 16), late = stage 4 (stride 32). Within a size the
placements are FLOP-matched (attention counted): early has a stage 3 no deeper than mid's, late deepens stage 3
with cheap conv blocks. ``model_cards/results/model_stats.json`` holds the measured counts.

Architecture v2 (``ARCH_VERSION``, issue 12): in the attention stages only every second block, counted from
each stage's last, has attention; conv blocks sit between (the ``alt2`` candidate of
``hybrid_zoo.benchmarks.candidates``, adopted by the rule in ``tools/arch_v2.py``). Stage 3 is deeper than in
v1 so that each architecture keeps v1's GMACs within 5% and the placements of a size stay FLOP-matched
(``tests/models/test_design_knobs.py`` checks both).
``VARIANTS_V1`` keeps v1 for the yardstick's baseline and for weights published before v2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

Fusion = Literal['early', 'mid', 'late']
FIRST_ATTENTION_STAGE: dict[str, int] = {'early': 1, 'mid': 2, 'late': 3}  # 0-based stage index
ARCH_VERSION = 2  # recorded in every config.json and card; bump when a registered architecture changes


@dataclass(frozen=True)
class ConvFormerCfg:
    """Architecture of one variant; each field is a ``ConvFormerFusion`` constructor argument."""

    widths: tuple[int, int, int, int]  # channels per stage
    depths: tuple[int, int, int, int]  # blocks per stage
    fusion: Fusion = 'mid'  # where attention starts
    head_dim: int = 32  # channels per attention head
    kv_reductions: tuple[int, int, int, int] = (1, 2, 1, 1)  # key/value pooling per stage (attention stages only)
    mlp_ratio: float = 4.0
    attn_every: int = 1  # in attention stages, attention in every attn_every-th block (v2: 2)

    def kwargs(self) -> dict:
        """JSON-friendly constructor kwargs (timm records them in ``config.json['model_args']``)."""
        return asdict(self)


_Depths = tuple[int, int, int, int]
_SIZES: dict[str, tuple[_Depths, dict[str, _Depths]]] = {
    # size: (widths, {fusion: v1 depths})
    'tiny': ((64, 128, 256, 384), {'early': (2, 2, 7, 2), 'mid': (2, 2, 8, 2), 'late': (2, 2, 13, 2)}),
    'small': ((64, 128, 320, 512), {'early': (2, 3, 11, 3), 'mid': (2, 3, 12, 3), 'late': (2, 3, 19, 3)}),
    'base': ((96, 192, 384, 576), {'early': (3, 4, 15, 3), 'mid': (3, 4, 16, 3), 'late': (3, 4, 26, 3)}),
}
V2_ATTN_EVERY = 2
# v2 stage-3 depth of the early and mid placements with attention in every second block: each keeps its v1 GMACs
# within 5%, and among those the depths chosen keep the three placements of a size closest (small early: 14, not the
# shallowest 13, which is 3.7% under the mid). The late placements keep v1: their attention runs on the 7x7 map of
# stage 4 only.
_V2_STAGE3: dict[tuple[str, str], int] = {
    ('tiny', 'early'): 9, ('tiny', 'mid'): 10,
    ('small', 'early'): 14, ('small', 'mid'): 15,
    ('base', 'early'): 19, ('base', 'mid'): 19,
}  # fmt: skip


def _name(size: str, fusion: str) -> str:
    return f'convformer_{size}' if fusion == 'mid' else f'convformer_{size}_{fusion}'


VARIANTS_V1: dict[str, ConvFormerCfg] = {
    _name(size, fusion): ConvFormerCfg(widths=widths, depths=depths, fusion=fusion)
    for size, (widths, by_fusion) in _SIZES.items()
    for fusion, depths in by_fusion.items()
}
SIZE_OF: dict[str, str] = {_name(size, fusion): size for size, (_, by_fusion) in _SIZES.items() for fusion in by_fusion}


def _v2(name: str, cfg: ConvFormerCfg) -> ConvFormerCfg:
    stage3 = _V2_STAGE3.get((SIZE_OF[name], cfg.fusion))
    if stage3 is None:
        return cfg
    return replace(cfg, depths=(*cfg.depths[:2], stage3, cfg.depths[3]), attn_every=V2_ATTN_EVERY)


VARIANTS: dict[str, ConvFormerCfg] = {name: _v2(name, cfg) for name, cfg in VARIANTS_V1.items()}


def measured_on_current(name: str, entry: dict) -> bool:
    """Whether a measured ``entry`` of model ``name`` (a results-file row) describes the architecture registered now.

    Our models' rows record ``architecture_version`` since v2; a row without it is of v1, which still describes a model
    v2 left unchanged (the late placements). Any other model's rows always do.
    """
    if name not in VARIANTS:
        return True
    version = entry.get('architecture_version', 1)
    return version == ARCH_VERSION or (version == 1 and VARIANTS_V1[name] == VARIANTS[name])
