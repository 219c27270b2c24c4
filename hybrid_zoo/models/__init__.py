"""The ConvFormer fusion family; importing this package registers the nine models in timm."""

from . import convformer_fusion
from .convformer_fusion import MODEL_NAMES
from .model import MIN_INPUT_SIZE, ConvFormerFusion
from .variants import VARIANTS, ConvFormerCfg


def list_variants() -> list[str]:
    """Names of the registered architectures, in table order (size, then early/mid/late)."""
    return list(MODEL_NAMES)


__all__ = ['MIN_INPUT_SIZE', 'MODEL_NAMES', 'VARIANTS', 'ConvFormerCfg', 'ConvFormerFusion', 'list_variants']
del convformer_fusion
