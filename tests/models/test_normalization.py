"""The grayscale mean and std have one home, and what a published grayscale tag declares is what the trainer feeds."""

from __future__ import annotations

import numpy as np
import pytest
import timm
from hypothesis import given
from hypothesis import strategies as st

import hybrid_zoo  # noqa: F401
from hybrid_zoo.models.pretrained import fmnist_cfg
from hybrid_zoo.normalization import GRAY_MEAN, GRAY_STD, for_channels

stat = st.floats(0.0, 10.0, allow_nan=False)


@given(st.lists(stat, min_size=1, max_size=4), st.sampled_from([1, 3]))
def test_for_channels_keeps_a_matching_statistic_and_averages_otherwise(values, in_chans):
    out = for_channels(values, in_chans)
    assert len(out) == in_chans and all(isinstance(v, float) for v in out)
    if len(values) == in_chans:
        assert out == tuple(values)
    else:
        assert out == pytest.approx((float(np.mean(values)),) * in_chans)


def test_the_published_grayscale_cfg_is_what_the_trainer_normalises_with():
    pytest.importorskip('datasets')
    from hybrid_zoo.train.data import model_data_config

    model = timm.create_model('convformer_tiny', in_chans=1, widths=(32, 32, 64, 64), depths=(1, 1, 2, 1))
    cfg = model_data_config(model)
    assert (cfg['mean'], cfg['std']) == (GRAY_MEAN, GRAY_STD) == (fmnist_cfg()['mean'], fmnist_cfg()['std'])
