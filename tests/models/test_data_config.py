"""timm's data pipeline for a model fits the channels it was built with, for every variant and channel count."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import hybrid_zoo
from hybrid_zoo.models.model import check_input

NAMES = hybrid_zoo.list_variants()
# a PIL image mode with that many channels, as a user's file would be converted to
MODES = {1: 'L', 2: 'LA', 3: 'RGB', 4: 'RGBA'}


@settings(max_examples=16, deadline=None)
@given(name=st.sampled_from(NAMES), in_chans=st.integers(1, 4), size=st.integers(8, 300))
def test_resolved_transform_feeds_the_model_it_was_resolved_for(name, in_chans, size):
    model = timm.create_model(name, in_chans=in_chans, num_classes=3)
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg['input_size'][0] == in_chans and len(cfg['mean']) == len(cfg['std']) == in_chans, cfg
    transform = timm.data.create_transform(**cfg)
    pixels = np.random.default_rng(size).integers(0, 256, (size, size + 3, in_chans), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(-1) if in_chans == 1 else pixels, MODES[in_chans])
    x = transform(image).unsqueeze(0)  # (1, in_chans, 224, 224)
    check_input(x, in_chans)  # raises ValueError for a tensor this model cannot take


def test_grayscale_model_runs_on_a_grayscale_image_through_its_own_pipeline():
    model = timm.create_model('convformer_tiny', in_chans=1, num_classes=10).eval()
    cfg = timm.data.resolve_data_config({}, model=model)
    assert cfg['input_size'] == (1, 224, 224)
    assert cfg['mean'] == (float(np.mean(IMAGENET_DEFAULT_MEAN)),)  # ImageNet's, averaged over the channels
    assert cfg['std'] == (float(np.mean(IMAGENET_DEFAULT_STD)),)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8), 'RGB')
    with torch.inference_mode():
        logits = model(timm.data.create_transform(**cfg)(rgb.convert('L')).unsqueeze(0))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize('name', ['convformer_tiny', 'convformer_tiny.fmnist_64'])
def test_cfg_that_already_fits_is_left_as_it_is(name):
    for in_chans in (3, 1):
        model = timm.create_model(name, in_chans=in_chans)
        registered = timm.models.get_pretrained_cfg(name).to_dict()
        if registered['input_size'][0] == in_chans:
            for key in ('input_size', 'mean', 'std'):
                assert model.pretrained_cfg[key] == registered[key], key


@settings(max_examples=12, deadline=None)
@given(name=st.sampled_from(NAMES), seed=st.integers(0, 2**16), size=st.integers(32, 96))
def test_a_grayscale_model_reads_an_rgb_input_as_its_luma(name, seed, size):
    """Any RGB tensor into a one-channel model gives exactly what its luma gives (the weights add up to 1, so the
    luma of a normalized image is the normalized luma), on every forward entry point."""
    from hybrid_zoo.normalization import LUMA_WEIGHTS

    model = timm.create_model(name, in_chans=1, num_classes=4, widths=(32, 32, 64, 64), depths=(1, 1, 1, 1)).eval()
    x = torch.randn(2, 3, size, size + 5, generator=torch.Generator().manual_seed(seed))
    luma = sum(w * x[:, i : i + 1] for i, w in enumerate(LUMA_WEIGHTS))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(luma), rtol=1e-4, atol=1e-5)
        final, maps = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(luma), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r'expected 1 input channels or 3, read as their luma .* got shape \[2, 2,'):
        model(x[:, :2])


def test_grayscale_model_runs_on_an_rgb_image_as_on_its_grayscale_conversion():
    """The README's pipeline as printed, fed an RGB file: the model reads it as PIL's convert('L') does (up to
    PIL's rounding to whole grey levels)."""
    model = timm.create_model('convformer_tiny', in_chans=1, num_classes=10).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    rgb = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8), 'RGB')
    with torch.inference_mode():
        from_rgb = model(transform(rgb).unsqueeze(0)).softmax(-1)
        from_gray = model(transform(rgb.convert('L')).unsqueeze(0)).softmax(-1)
    torch.testing.assert_close(from_rgb, from_gray, atol=2e-3, rtol=0)
