"""The architecture v3 candidate knobs: each builds, trains (every parameter gets a gradient), folds exactly into
the plain deployed model, and refuses what it cannot build; every registered v3 arm of the new designs is
FLOP-matched to its v2 architecture and folds exactly at full size."""

from __future__ import annotations

import contextlib
import copy
import functools

import pytest
import timm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import LayerScale2d
from timm.models import reparameterize_model
from torch import nn

import hybrid_zoo  # noqa: F401
from hybrid_zoo.benchmarks import candidates
from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers import AttnBlock, ConvBlock, ConvNorm, MBConv, PatchMerging, RepDWConvNorm
from hybrid_zoo.layers import fused as fused_ops
from hybrid_zoo.models.model import has_attention
from hybrid_zoo.models.variants import VARIANTS

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 3, 2), 'attn_every': 2}
CANDIDATES = [
    {'branch_scale': 'bn0'},
    {'rep_dw': True},
    {'act_layer': 'silu'},
    {'branch_scale': 'bn0', 'rep_dw': True, 'act_layer': 'silu'},
]
# TinyViT's pieces: they change the deployed graph (and its GMACs)
TINYVIT = [
    {'downsample': 'patch_merging'},
    {'first_stage': 'mbconv'},
    {'downsample': 'patch_merging', 'first_stage': 'mbconv', 'branch_scale': 'bn0', 'act_layer': 'silu'},
]
NEW_ARMS = ['nlds', 'mb1', 'wide3']


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


@pytest.mark.parametrize('kwargs', CANDIDATES + TINYVIT, ids=lambda k: '+'.join(f'{a}={b}' for a, b in k.items()))
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
    leftovers = [
        type(m).__name__ for m in folded_modules(model) if isinstance(m, (nn.BatchNorm2d, ConvNorm, RepDWConvNorm))
    ]
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
        ({'downsample': 'merge'}, r"downsample must be one of \('conv', 'patch_merging'\), got 'merge'"),
        ({'first_stage': 'MBConv'}, r"first_stage must be one of \('conv', 'mbconv'\), got 'MBConv'"),
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


# ---- TinyViT's pieces -------------------------------------------------------------------------------------------


def test_mbconv_branch_starts_switched_off():
    """The zero-initialised last BN: at initialisation the block is the activation of its input (TinyViT)."""
    block = MBConv(16).train()
    x = torch.randn(4, 16, 8, 8)
    torch.testing.assert_close(block(x), nn.functional.gelu(x))
    assert block.conv3.bn.weight.abs().sum() == 0 and block.conv1.bn.weight.abs().sum() > 0


@settings(max_examples=20, deadline=None)
@given(height=st.integers(2, 40), width=st.integers(2, 40), fused=st.booleans())
def test_patch_merging_keeps_the_strided_conv_size_and_folds_exactly(height, width, fused):
    """Any map size: the output is the 3x3 stride-2 conv's (the stages' maps are v2's), and the folded module
    (with or without oneDNN's fused GELU) computes the same."""
    merge = _randomise(PatchMerging(8, 16)).eval()
    strided = ConvNorm(8, 16, 3, stride=2).eval()
    x = torch.randn(2, 8, height, width)
    with torch.no_grad():
        ref = merge(x)
        assert ref.shape == strided(x).shape
        folded = _reparameterized(merge, fused)
        torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)
    assert not [m for m in folded.modules() if isinstance(m, (nn.BatchNorm2d, ConvNorm))]
    kinds = [type(m) for m in (folded.conv1, folded.conv2)]
    assert kinds == ([fused_ops.ConvAct] * 2 if fused and fused_ops.fusion_enabled() else [nn.Conv2d] * 2)


def _reparameterized(module: nn.Module, fused: bool) -> nn.Module:
    """A folded copy of ``module`` (its own ``reparameterize()``: timm's walker calls it on children only)."""
    module = copy.deepcopy(module)
    with contextlib.nullcontext() if fused else fused_ops.unfused():
        module.reparameterize()
    return module


@pytest.mark.parametrize('fused', [True, False])
def test_mbconv_folds_exactly_with_and_without_fused_post_ops(fused):
    block = _randomise(MBConv(16)).eval()
    x = torch.randn(2, 16, 9, 7)
    with torch.no_grad():
        ref = block(x)
        folded = _reparameterized(block, fused)
        torch.testing.assert_close(folded(x), ref, rtol=1e-5, atol=1e-5)
    assert folded.fused == (fused and fused_ops.fusion_enabled())


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:FutureWarning')
def test_tinyvit_knobs_script_and_trace():
    """TorchScript (as built and folded) and torch.fx feature extraction, as timm's suite checks of every model."""
    from timm.models import get_notrace_functions, get_notrace_modules
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = timm.create_model('convformer_tiny', num_classes=5, **SMALL, **TINYVIT[2]).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))
        folded = reparameterize_model(model)
        torch.testing.assert_close(torch.jit.script(folded)(x), folded(x))
    tracer_kwargs = dict(leaf_modules=get_notrace_modules(), autowrap_functions=get_notrace_functions())
    train_nodes, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
    fx = create_feature_extractor(
        model, train_return_nodes=[train_nodes[-1]], eval_return_nodes=[eval_nodes[-1]], tracer_kwargs=tracer_kwargs
    )
    with torch.no_grad():
        torch.testing.assert_close(next(iter(fx(x).values())), model(x))


def test_knobs_at_their_defaults_build_v2():
    """The new knobs at their defaults build exactly the registered model (same names, shapes and values from the
    same seed); ``tests/models/test_state_dict_layout.py`` checks the nine against the recorded layout."""
    torch.manual_seed(0)
    plain = timm.create_model('convformer_tiny', **SMALL)
    torch.manual_seed(0)
    explicit = timm.create_model('convformer_tiny', **SMALL, downsample='conv', first_stage='conv')
    assert plain.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in plain.state_dict().items())
    assert not [m for m in plain.modules() if isinstance(m, (MBConv, PatchMerging))]


# ---- the registered v3 arms at full size --------------------------------------------------------------------------


@functools.cache
def _v2_gmacs(architecture: str) -> float:
    return count_macs(timm.create_model(architecture).eval(), (3, 224, 224)).gmacs


@pytest.mark.parametrize('arm', NEW_ARMS)
@pytest.mark.parametrize('architecture', list(VARIANTS))
def test_new_arm_is_flop_matched_runs_and_folds_exactly(architecture, arm):
    """Registered ``<architecture>__<arm>``: GMACs at 224 px (attention counted) within 5% of v2's, a forward on a
    small image, and the folded model computing the same in eval mode with trained-looking statistics."""
    model = timm.create_model(f'{architecture}{candidates.SEP}{arm}').eval()
    gmacs = count_macs(model, (3, 224, 224)).gmacs
    assert abs(gmacs / _v2_gmacs(architecture) - 1) < 0.05, (gmacs, _v2_gmacs(architecture))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = _randomise(model)(x)
        folded = reparameterize_model(model)(x)
    assert ref.shape == (1, 1000) and torch.isfinite(ref).all()
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize('architecture', list(VARIANTS))
def test_new_arms_change_what_they_say(architecture):
    """nlds: PatchMerging at the start of stages 2-4 and nothing else; mb1: stage 1 of MBConv blocks and nothing
    else; wide3: a wider stage 3 of whole 32-channel heads, fewer blocks, attention placed by v2's rule."""
    cfg = VARIANTS[architecture]
    kwargs = {a: candidates.arm_kwargs_v3(architecture, a) for a in NEW_ARMS}
    assert {k: v for k, v in kwargs['nlds'].items() if k != 'downsample'} == cfg.kwargs()
    assert {k: v for k, v in kwargs['mb1'].items() if k != 'first_stage'} == cfg.kwargs()
    wide = kwargs['wide3']
    same = {k: v for k, v in cfg.kwargs().items() if k not in ('widths', 'depths')}
    assert {k: v for k, v in wide.items() if k not in ('widths', 'depths')} == same
    assert wide['widths'][2] > cfg.widths[2] and wide['widths'][2] % cfg.head_dim == 0
    assert (*wide['widths'][:2], wide['widths'][3]) == (*cfg.widths[:2], cfg.widths[3])
    assert wide['depths'][2] < cfg.depths[2] and (*wide['depths'][:2], wide['depths'][3]) == (
        *cfg.depths[:2],
        cfg.depths[3],
    )
    model = timm.create_model(f'{architecture}{candidates.SEP}wide3', device='meta')
    stage = model.stages[2]
    attention = cfg.fusion != 'late'
    assert [isinstance(b, AttnBlock) for b in stage.blocks] == [
        has_attention(i, len(stage.blocks), attention, cfg.attn_every) for i in range(len(stage.blocks))
    ]
    nlds = timm.create_model(f'{architecture}{candidates.SEP}nlds', device='meta')
    assert [type(s.downsample) for s in nlds.stages] == [nn.Identity, PatchMerging, PatchMerging, PatchMerging]
    mb1 = timm.create_model(f'{architecture}{candidates.SEP}mb1', device='meta')
    assert [type(b) for b in mb1.stages[0].blocks] == [MBConv] * cfg.depths[0]
    assert not [b for s in mb1.stages[1:] for b in s.blocks if isinstance(b, MBConv)]


@pytest.mark.parametrize('arm', list(candidates.ARMS_V3))
def test_recorded_model_args_rebuild_the_arm(arm):
    """What ``config.json`` records of a v3 arm (``_model_args``, JSON as ``save_for_hf`` writes it) builds the same
    modules and tensors through the product's entrypoint, so saved arm weights load."""
    import json

    model = timm.create_model(f'convformer_tiny_late{candidates.SEP}{arm}', device='meta')
    args = json.loads(json.dumps(model._model_args))
    assert args.items() >= {k: v for k, v in candidates.ARMS_V3[arm].items() if not isinstance(v, dict)}.items()
    rebuilt = timm.create_model('convformer_tiny_late', device='meta', **args)
    assert [type(m) for m in rebuilt.modules()] == [type(m) for m in model.modules()]
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
