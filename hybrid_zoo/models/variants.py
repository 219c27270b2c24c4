"""The nine architectures as data: three sizes x three fusion placements. No torch import here.

Placement = the first stage with attention in the 4-stage backbone (output strides 4/8/16/32):
early = stage 2 (stride 8), mid = stage 3 (stride 16), late = stage 4 (stride 32). Within a size the
placements are FLOP-matched (attention counted): early has a stage 3 no deeper than mid's, late deepens stage 3
with cheap conv blocks. ``model_cards/results/model_stats.json`` holds the measured counts.

Architecture v2 (``ARCH_VERSION``): in the attention stages only every second block, counted from
each stage's last, has attention; conv blocks sit between (the ``alt2`` candidate of
``hybrid_zoo.benchmarks.candidates``, adopted by the rule in ``tools/arch_v2.py``). Stage 3 is deeper than in
v1 so that each architecture keeps v1's GMACs within 5% and the placements of a size stay FLOP-matched
(``tests/models/test_design_knobs.py`` checks both).
``VARIANTS_V1`` keeps v1 for the yardstick's baseline and for weights published before v2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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


_TINY, _SMALL, _BASE = (64, 128, 256, 384), (64, 128, 320, 512), (96, 192, 384, 576)  # channels per stage
V2_ATTN_EVERY = 2

# The registered architectures (v2). Stage 3 of the early and mid placements is as deep as keeps each one's v1 GMACs
# within 5% with attention in every second block, and among those depths the ones that keep the three placements
# of a size closest (small early: 14, not the shallowest 13, which is 3.7% under the mid). The late placements are
# v1's: their attention runs on the 7x7 map of stage 4 only.
# fmt: off
VARIANTS: dict[str, ConvFormerCfg] = {
    'convformer_tiny_early':  ConvFormerCfg(_TINY,  depths=(2, 2, 9, 2),  fusion='early', attn_every=V2_ATTN_EVERY),
    'convformer_tiny':        ConvFormerCfg(_TINY,  depths=(2, 2, 10, 2), fusion='mid',   attn_every=V2_ATTN_EVERY),
    'convformer_tiny_late':   ConvFormerCfg(_TINY,  depths=(2, 2, 13, 2), fusion='late'),
    'convformer_small_early': ConvFormerCfg(_SMALL, depths=(2, 3, 14, 3), fusion='early', attn_every=V2_ATTN_EVERY),
    'convformer_small':       ConvFormerCfg(_SMALL, depths=(2, 3, 15, 3), fusion='mid',   attn_every=V2_ATTN_EVERY),
    'convformer_small_late':  ConvFormerCfg(_SMALL, depths=(2, 3, 19, 3), fusion='late'),
    'convformer_base_early':  ConvFormerCfg(_BASE,  depths=(3, 4, 19, 3), fusion='early', attn_every=V2_ATTN_EVERY),
    'convformer_base':        ConvFormerCfg(_BASE,  depths=(3, 4, 19, 3), fusion='mid',   attn_every=V2_ATTN_EVERY),
    'convformer_base_late':   ConvFormerCfg(_BASE,  depths=(3, 4, 26, 3), fusion='late'),
}

# Architecture v1 (attention in every block of the attention stages): the yardstick's baseline, and what weights
# published before v2 load into.
VARIANTS_V1: dict[str, ConvFormerCfg] = {
    'convformer_tiny_early':  ConvFormerCfg(_TINY,  depths=(2, 2, 7, 2),  fusion='early'),
    'convformer_tiny':        ConvFormerCfg(_TINY,  depths=(2, 2, 8, 2),  fusion='mid'),
    'convformer_tiny_late':   ConvFormerCfg(_TINY,  depths=(2, 2, 13, 2), fusion='late'),
    'convformer_small_early': ConvFormerCfg(_SMALL, depths=(2, 3, 11, 3), fusion='early'),
    'convformer_small':       ConvFormerCfg(_SMALL, depths=(2, 3, 12, 3), fusion='mid'),
    'convformer_small_late':  ConvFormerCfg(_SMALL, depths=(2, 3, 19, 3), fusion='late'),
    'convformer_base_early':  ConvFormerCfg(_BASE,  depths=(3, 4, 15, 3), fusion='early'),
    'convformer_base':        ConvFormerCfg(_BASE,  depths=(3, 4, 16, 3), fusion='mid'),
    'convformer_base_late':   ConvFormerCfg(_BASE,  depths=(3, 4, 26, 3), fusion='late'),
}
# fmt: on
SIZE_OF: dict[str, str] = {name: name.split('_')[1] for name in VARIANTS}  # 'convformer_<size>[_<fusion>]'


def measured_on_current(name: str, entry: dict) -> bool:
    """Whether a measured ``entry`` of model ``name`` (a results-file row) describes the architecture registered now.

    Our models' rows record ``architecture_version`` since v2; a row without it is of v1, which still describes a model
    v2 left unchanged (the late placements). Any other model's rows always do.
    """
    if name not in VARIANTS:
        return True
    version = entry.get('architecture_version', 1)
    return version == ARCH_VERSION or (version == 1 and VARIANTS_V1[name] == VARIANTS[name])
