"""Per-channel normalisation for the channels a model takes: the one home of the grayscale mean, std and luma."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def for_channels(values: Sequence[float], in_chans: int) -> tuple[float, ...]:
    """A per-channel statistic (a mean or a std) for ``in_chans`` channels: as given when the count matches, else
    their average on every channel (an RGB model's statistics for its grayscale copy: a gray pixel ``g`` stands for
    ``(g, g, g)``)."""
    values = tuple(float(v) for v in values)
    if len(values) == in_chans:
        return values
    return (sum(values) / len(values),) * in_chans


# what the trainer normalises a one-channel model's input with (the ImageNet defaults of the untagged cfgs)
GRAY_MEAN = for_channels(IMAGENET_DEFAULT_MEAN, 1)
GRAY_STD = for_channels(IMAGENET_DEFAULT_STD, 1)

# ITU-R BT.601 luma, what PIL's Image.convert('L') computes: a grayscale model reads a 3-channel input as this
# weighted sum. The weights add up to 1, so luma and a shared per-channel normalisation commute: the luma of a
# normalised RGB tensor is the normalised luma of the image.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W): the ``LUMA_WEIGHTS`` sum of the channels, in ``x``'s dtype."""
    # the weights written out: TorchScript (torch.jit.script of a model) cannot read a module-level tuple
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
