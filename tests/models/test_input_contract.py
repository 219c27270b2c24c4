"""The input contract at its edges: every dtype, empty batches and a batch BatchNorm cannot train on give a
``ValueError`` that says what was expected, at every entry point that reads images (forward, forward_features,
forward_intermediates, features_only), for every placement and the v3 candidates' TinyViT pieces."""

from __future__ import annotations

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hybrid_zoo  # noqa: F401

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 2, 1), 'num_classes': 3}
MODELS = {
    f: timm.create_model(f'convformer_tiny{s}', **SMALL)
    for f, s in (('early', '_early'), ('mid', ''), ('late', '_late'))
}
# the architecture v3 candidates' TinyViT pieces (non-linear downsampling, an MBConv first stage) keep the contract
MODELS['mid_tinyvit'] = timm.create_model('convformer_tiny', **SMALL, downsample='patch_merging', first_stage='mbconv')
ENTRY_POINTS = {
    'forward': lambda m, x: m(x),
    'forward_features': lambda m, x: m.forward_features(x),
    'forward_intermediates': lambda m, x: m.forward_intermediates(x),
}
FLOATS = [torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize('entry', ENTRY_POINTS)
@pytest.mark.parametrize('fusion', MODELS)
@pytest.mark.parametrize('dtype', FLOATS, ids=str)
def test_a_float_of_another_dtype_is_refused_with_the_cast_to_make(fusion, entry, dtype):
    model = MODELS[fusion].eval()
    with pytest.raises(ValueError, match=rf'expected dtype torch.float32 .* got {dtype}: cast the input'):
        ENTRY_POINTS[entry](model, torch.zeros(2, 3, 64, 64, dtype=dtype))


def test_a_model_in_another_dtype_takes_its_own_and_autocast_takes_any():
    model = timm.create_model('convformer_tiny', **SMALL).eval().to(torch.float64)
    assert model(torch.zeros(1, 3, 64, 64, dtype=torch.float64)).dtype == torch.float64
    with pytest.raises(ValueError, match='expected dtype torch.float64'):
        model(torch.zeros(1, 3, 64, 64))
    fp32 = MODELS['mid'].eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert fp32(torch.zeros(1, 3, 64, 64, dtype=torch.bfloat16)).shape == (1, 3)


@pytest.mark.parametrize('entry', ENTRY_POINTS)
@pytest.mark.parametrize('training', [False, True])
def test_an_empty_batch_is_refused(entry, training):
    model = MODELS['mid'].train(training)
    with pytest.raises(ValueError, match=r'expected a batch of at least one image, got an empty batch'):
        ENTRY_POINTS[entry](model, torch.zeros(0, 3, 64, 64))


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3), height=st.integers(32, 70), width=st.integers(32, 70), fusion=st.sampled_from(list(MODELS))
)
def test_training_refuses_exactly_the_batches_batchnorm_cannot_use(batch, height, width, fusion):
    model = MODELS[fusion].train()
    values = batch * -(-height // 32) * -(-width // 32)  # values per channel at stride 32
    x = torch.randn(batch, 3, height, width)
    if values < 2:
        with pytest.raises(ValueError, match='training needs more than one value per channel at stride 32'):
            model(x)
    else:
        assert model(x).shape == (batch, 3)
    assert model.eval()(x).shape == (batch, 3)  # inference takes any batch


def test_features_only_checks_too():
    model = timm.create_model(
        'convformer_tiny', features_only=True, **{k: v for k, v in SMALL.items() if k != 'num_classes'}
    )
    with pytest.raises(ValueError, match='expected dtype torch.float32'):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.float64))
    assert len(model.eval()(torch.zeros(1, 3, 64, 64))) == 4
