"""The ConvFormer fusion family; importing this package registers the nine models in timm."""

import timm

from . import convformer_fusion
from .convformer_fusion import MODEL_NAMES
from .model import MIN_INPUT_SIZE, ConvFormerFusion
from .variants import VARIANTS, ConvFormerCfg

_TIMM_MODULE = convformer_fusion.__name__.rsplit('.', 1)[-1]  # timm files entrypoints under the module basename


def list_variants() -> list[str]:
    """Names of the registered architectures, in table order (size, then early/mid/late)."""
    return list(MODEL_NAMES)


def list_models(pattern: str = '*', pretrained: bool = False) -> list[str]:
    """This package's registered names matching ``pattern``, sorted; timm's own models are never listed.

    ``timm.list_models('convformer*')`` also returns timm's MetaFormer ``convformer_s18/s36/m36/b36``, which
    share the prefix; this filters on the registering module instead.

    Args:
        pattern: Shell-style wildcard on the name, e.g. ``'*_late'`` or ``'convformer_tiny*'``.
        pretrained: List the ``<architecture>.<tag>`` names that have published weights instead.

    Returns:
        Architecture names, or tagged names when ``pretrained`` is set.
    """
    return timm.list_models(pattern, module=_TIMM_MODULE, pretrained=pretrained)


__all__ = [
    'MIN_INPUT_SIZE',
    'MODEL_NAMES',
    'VARIANTS',
    'ConvFormerCfg',
    'ConvFormerFusion',
    'list_models',
    'list_variants',
]
del convformer_fusion
