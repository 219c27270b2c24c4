"""Building blocks of the ConvFormer fusion family (NCHW in, NCHW out)."""

from .attention import Attention, AttnBlock, ConvFFN
from .conv import BRANCH_SCALES, ConvBlock, ConvNorm, RepDWConvNorm, branch_scale, fold_branch_scale
from .fold import fold_bn_after, fold_bn_before, fold_scale_after
from .mbconv import MBConv, PatchMerging

__all__ = [
    'BRANCH_SCALES',
    'RepDWConvNorm',
    'branch_scale',
    'fold_branch_scale',
    'Attention',
    'AttnBlock',
    'ConvBlock',
    'ConvFFN',
    'ConvNorm',
    'MBConv',
    'PatchMerging',
    'fold_bn_after',
    'fold_bn_before',
    'fold_scale_after',
]
