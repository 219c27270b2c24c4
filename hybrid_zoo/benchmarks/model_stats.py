"""Params and GMACs of the nine models (attention counted) into ``model_cards/results/model_stats.json``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import timm

from hybrid_zoo.benchmarks.results import machine_meta
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo.models import VARIANTS, list_variants
from hybrid_zoo.models.variants import ARCH_VERSION, FIRST_ATTENTION_STAGE, SIZE_OF

_log = logging.getLogger(__name__)


def model_stats(name: str, input_size: Sequence[int] = (3, 224, 224)) -> dict:
    """Architecture facts and measured counts of one registered ConvFormer variant (1000-class head)."""

    cfg = VARIANTS[name]
    model = timm.create_model(name)
    macs = count_macs(model, tuple(input_size))
    return {
        'size': SIZE_OF[name],
        'fusion': cfg.fusion,
        'params_m': round(count_params(model) / 1e6, 3),
        'gmacs': round(macs.gmacs, 4),
        'attention_gmacs': round(macs.attention_gmacs, 4),
        'attention_stages': list(range(FIRST_ATTENTION_STAGE[cfg.fusion] + 1, 5)),  # 1-based
        'attn_every': cfg.attn_every,
        'architecture_version': ARCH_VERSION,
        'depths': list(cfg.depths),
        'widths': list(cfg.widths),
        'head_dim': cfg.head_dim,
        'feature_strides': [f['reduction'] for f in model.feature_info],
        'num_features': model.num_features,
        'input_size': list(input_size),
    }


def flop_matching(models: dict) -> dict:
    """Per size: GMAC spread of the three placements, (max - min) / min."""
    by_size: dict[str, list[float]] = {}
    for row in models.values():
        by_size.setdefault(row['size'], []).append(row['gmacs'])
    return {size: round((max(g) - min(g)) / min(g), 4) for size, g in by_size.items()}


def collect(input_size: Sequence[int] = (3, 224, 224)) -> dict:

    models = {name: model_stats(name, input_size) for name in list_variants()}
    meta = dict(machine_meta(), input_size=list(input_size), counter='torch.utils.flop_counter + SDPA formula')
    return {'meta': meta, 'models': models, 'flop_spread_by_size': flop_matching(models)}
