"""Per-channel normalisation for the channels a model takes: the one home of the grayscale mean and std."""

from __future__ import annotations

from collections.abc import Sequence

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
