"""The nine architectures as data: three sizes x three fusion placements. No torch import here.

Placement = the first stage with attention in the 4-stage backbone (output strides 4/8/16/32):
early = stage 2 (stride 8), mid = stage 3 (stride 16), late = stage 4 (stride 32). Within a size the
placements are FLOP-matched (attention counted): early drops one stage-3 block, late deepens stage 3
with cheap conv blocks. ``model_cards/results/model_stats.json`` holds the measured counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Fusion = Literal['early', 'mid', 'late']
FIRST_ATTENTION_STAGE: dict[str, int] = {'early': 1, 'mid': 2, 'late': 3}  # 0-based stage index


@dataclass(frozen=True)
class ConvFormerCfg:
    """Architecture of one variant; each field is a ``ConvFormerFusion`` constructor argument."""

    widths: tuple[int, int, int, int]  # channels per stage
    depths: tuple[int, int, int, int]  # blocks per stage
    fusion: Fusion = 'mid'  # where attention starts
    head_dim: int = 32  # channels per attention head
    kv_reductions: tuple[int, int, int, int] = (1, 2, 1, 1)  # key/value pooling per stage (attention stages only)
    mlp_ratio: float = 4.0

    def kwargs(self) -> dict:
        """JSON-friendly constructor kwargs (timm records them in ``config.json['model_args']``)."""
        return asdict(self)


_SIZES: dict[str, tuple[tuple[int, int, int, int], dict[str, tuple[int, int, int, int]]]] = {
    # size: (widths, {fusion: depths})
    'tiny': ((64, 128, 256, 384), {'early': (2, 2, 7, 2), 'mid': (2, 2, 8, 2), 'late': (2, 2, 13, 2)}),
    'small': ((64, 128, 320, 512), {'early': (2, 3, 11, 3), 'mid': (2, 3, 12, 3), 'late': (2, 3, 19, 3)}),
    'base': ((96, 192, 384, 576), {'early': (3, 4, 15, 3), 'mid': (3, 4, 16, 3), 'late': (3, 4, 26, 3)}),
}


def _name(size: str, fusion: str) -> str:
    return f'convformer_{size}' if fusion == 'mid' else f'convformer_{size}_{fusion}'


VARIANTS: dict[str, ConvFormerCfg] = {
    _name(size, fusion): ConvFormerCfg(widths=widths, depths=depths, fusion=fusion)
    for size, (widths, by_fusion) in _SIZES.items()
    for fusion, depths in by_fusion.items()
}
SIZE_OF: dict[str, str] = {_name(size, fusion): size for size, (_, by_fusion) in _SIZES.items() for fusion in by_fusion}
