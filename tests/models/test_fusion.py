"""Deploy-time oneDNN post-op fusion (hybrid_zoo.layers.fused): exact, and invisible to export, FLOP counting and
autograd, which all see the plain ops."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from timm.models import reparameterize_model

import hybrid_zoo  # noqa: F401
from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers import fused

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 2, 1), 'num_classes': 10}

pytestmark = pytest.mark.skipif(
    not fused.pointwise_fusion_available(), reason='this PyTorch has no oneDNN pointwise-fused convolution'
)


def _trained_looking(name: str) -> torch.nn.Module:
    """A model whose BatchNorm statistics and layer scales are far from their init, so folding changes weights."""
    torch.manual_seed(0)
    model = timm.create_model(name, **SMALL).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
        if hasattr(m, 'gamma'):
            m.gamma.data.uniform_(0.2, 1.0)
    return model


def _fold(model: torch.nn.Module, fuse: bool) -> torch.nn.Module:
    if fuse:
        return reparameterize_model(copy.deepcopy(model))
    with fused.unfused():
        return reparameterize_model(copy.deepcopy(model))


@pytest.mark.parametrize('name', ['convformer_tiny_early', 'convformer_tiny', 'convformer_tiny_late'])
@pytest.mark.parametrize('channels_last', [True, False])
def test_fused_model_equals_the_plain_one(name, channels_last):
    model = _trained_looking(name)
    plain, fz = _fold(model, False), _fold(model, True)
    kinds = {type(m) for m in fz.modules()}
    assert {fused.ConvAct, fused.ConvAdd} <= kinds
    assert not any(isinstance(m, (fused.ConvAct, fused.ConvAdd)) for m in plain.modules())
    x = torch.randn(3, 3, 64, 80)
    if channels_last:
        x, fz, plain = (t.to(memory_format=torch.channels_last) for t in (x, fz, plain))
    with torch.inference_mode():
        ref, a, b = model(x), plain(x), fz(x)
    assert (a - b).abs().max().item() <= 1e-5
    assert (ref - b).abs().max().item() <= 1e-5


def test_the_fused_ops_are_taken_in_inference_and_not_under_autograd_or_counting(monkeypatch):
    fz = _fold(_trained_looking('convformer_tiny'), True)
    calls = []
    real = torch.ops.mkldnn._convolution_pointwise
    monkeypatch.setattr(fused, 'fusable', lambda x, _f=fused.fusable: calls.append(_f(x)) or _f(x))
    with torch.inference_mode():
        fz(torch.randn(1, 3, 64, 64))
    assert calls and all(calls), 'plain inference must take the fused path'
    calls.clear()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    fz(x).sum().backward()  # autograd: the plain ops, which have gradients
    assert calls and not any(calls) and x.grad is not None
    assert real is torch.ops.mkldnn._convolution_pointwise


def test_flop_count_and_onnx_export_see_the_plain_ops(tmp_path):
    model = _trained_looking('convformer_tiny')
    plain, fz = _fold(model, False), _fold(model, True)
    assert count_macs(fz, (3, 64, 64)).gmacs == pytest.approx(count_macs(plain, (3, 64, 64)).gmacs, rel=1e-9)
    from hybrid_zoo.deploy import build

    deployed = build(fz, 'onnxruntime', torch.randn(2, 3, 64, 64), work_dir=tmp_path)
    assert deployed.max_abs_diff <= 1e-4


def test_the_switch_turns_fusion_off(monkeypatch):
    monkeypatch.setenv(fused.ENV, '0')
    assert not fused.fusion_enabled()
    folded = reparameterize_model(_trained_looking('convformer_tiny'))
    assert not any(isinstance(m, (fused.ConvAct, fused.ConvAdd)) for m in folded.modules())


def test_a_fused_model_scripts():
    fz = _fold(_trained_looking('convformer_tiny'), True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(fz)(x), fz(x))


def test_the_feature_check_leaves_the_callers_random_state_alone():
    fused.pointwise_fusion_available.cache_clear()
    before = torch.get_rng_state()
    assert fused.pointwise_fusion_available()
    assert torch.equal(torch.get_rng_state(), before)
