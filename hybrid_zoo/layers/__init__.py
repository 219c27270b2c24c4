"""Building blocks of the ConvFormer fusion family (NCHW in, NCHW out)."""

from .attention import Attention, AttnBlock, ConvFFN
from .conv import ConvBlock, ConvNorm
from .fold import fold_bn_after, fold_bn_before, fold_scale_after

__all__ = [
    'Attention',
    'AttnBlock',
    'ConvBlock',
    'ConvFFN',
    'ConvNorm',
    'fold_bn_after',
    'fold_bn_before',
    'fold_scale_after',
]
