"""The architecture v3 candidate knobs: each builds, trains (every parameter gets a gradient), folds exactly into
the plain deployed model, and refuses what it cannot build."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import LayerScale2d
from timm.models import reparameterize_model
from torch import nn

import hybrid_zoo  # noqa: F401
from hybrid_zoo.layers import ConvBlock, RepDWConvNorm

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 3, 2), 'attn_every': 2}
CANDIDATES = [
    {'branch_scale': 'bn0'},
    {'rep_dw': True},
    {'act_layer': 'silu'},
    {'branch_scale': 'bn0', 'rep_dw': True, 'act_layer': 'silu'},
]


def _randomise(model: nn.Module) -> nn.Module:
    """Trained-looking statistics and scales, so a fold that drops or misplaces a term shows."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, LayerScale2d):
                m.gamma.copy_(torch.rand(m.gamma.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize('kwargs', CANDIDATES, ids=lambda k: '+'.join(f'{a}={b}' for a, b in k.items()))
@pytest.mark.parametrize('name', ['convformer_tiny', 'convformer_tiny_late'])
def test_candidate_builds_trains_and_folds_exactly(name, kwargs):
    model = timm.create_model(name, num_classes=5, **SMALL, **kwargs)
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    model = _randomise(model).eval()
    with torch.no_grad():
        ref = model(x)
        folded = reparameterize_model(model)(x)
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-4)
    leftovers = [type(m).__name__ for m in folded_modules(model) if isinstance(m, (nn.BatchNorm2d, RepDWConvNorm))]
    assert leftovers == [], f'not folded: {leftovers}'


def folded_modules(model: nn.Module):
    folded = reparameterize_model(model)
    return [m for stage in folded.stages for m in stage.modules()]


def test_bn0_branch_starts_switched_off():
    block = ConvBlock(16, scale='bn0').train()
    x = torch.randn(4, 16, 8, 8)
    torch.testing.assert_close(block(x), x)  # zero-initialised BN weight: the branch adds exactly nothing
    assert isinstance(block.ls, nn.BatchNorm2d) and block.ls.weight.abs().sum() == 0


def test_rep_dw_folds_into_one_depthwise_conv():
    dw = _randomise(RepDWConvNorm(8, 7)).eval()
    x = torch.randn(2, 8, 10, 10)
    fused = dw.fuse()
    assert isinstance(fused, nn.Conv2d) and fused.kernel_size == (7, 7) and fused.groups == 8
    with torch.no_grad():
        torch.testing.assert_close(fused(x), dw(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'branch_scale': 'ls'}, r"branch_scale must be one of \('layerscale', 'bn0'\), got 'ls'"),
    ],
)
def test_bad_candidate_knobs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('convformer_tiny', **SMALL, **kwargs)


@pytest.mark.parametrize('kernel_size', [1, 2])
def test_rep_dw_refuses_a_kernel_it_cannot_fold_into(kernel_size):
    with pytest.raises(ValueError, match=f'a 3x3 branch beside a {kernel_size}x{kernel_size} kernel folds only into'):
        RepDWConvNorm(8, kernel_size)


def test_candidates_leave_deployed_flops_unchanged():
    """All three are free at inference: the folded model computes what the registered one does."""
    from hybrid_zoo.flops import count_macs

    base = count_macs(reparameterize_model(timm.create_model('convformer_tiny').eval()), (3, 224, 224)).gmacs
    for kwargs in CANDIDATES:
        model = reparameterize_model(timm.create_model('convformer_tiny', **kwargs).eval())
        assert count_macs(model, (3, 224, 224)).gmacs == pytest.approx(base, rel=1e-6), kwargs
