"""The architecture v2 design knobs: each builds, runs, folds exactly, and refuses what it cannot build."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import reparameterize_model

import hybrid_zoo  # noqa: F401
from hybrid_zoo.benchmarks import candidates
from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers import AttnBlock, ConvBlock
from hybrid_zoo.models.variants import VARIANTS

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 3, 2)}


@pytest.mark.parametrize(
    'kwargs',
    [
        {'ffn_dw': False},
        {'attn_ratio': 0.25, 'attn_heads': 1},
        {'attn_every': 2},
        {'attn_every': 2, 'ffn_dw': False, 'attn_ratio': 0.5, 'attn_heads': 1},
    ],
)
def test_knobs_build_run_and_fold_exactly(kwargs):
    model = timm.create_model('convformer_tiny', num_classes=5, **SMALL, **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = reparameterize_model(model)(x)
    assert ref.shape == (2, 5)
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-5)


def test_attn_every_keeps_attention_in_each_stage_last_block():
    model = timm.create_model('convformer_tiny', attn_every=2, **SMALL)
    kinds = [[type(b) for b in stage.blocks] for stage in model.stages]
    assert kinds[2] == [AttnBlock, ConvBlock, AttnBlock]  # counted from the last block
    assert kinds[3] == [ConvBlock, AttnBlock]
    assert all(k is ConvBlock for k in kinds[0] + kinds[1])


def test_single_head_on_a_quarter_of_the_channels():
    model = timm.create_model('convformer_tiny', attn_ratio=0.25, attn_heads=1)
    attn = model.stages[2].blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (1, 64)
    assert attn.q.out_channels == 64 and attn.kv.out_channels == 128 and attn.proj.out_channels == 256


def test_defaults_are_v1():
    """Every knob at its default builds the v1 architecture: the same parameter names and shapes."""
    v1 = timm.create_model('convformer_tiny')
    explicit = timm.create_model('convformer_tiny', attn_ratio=1.0, attn_heads=0, ffn_dw=True, attn_every=1)
    assert {k: v.shape for k, v in v1.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}


@pytest.mark.parametrize(
    ('kwargs', 'match'),
    [
        ({'attn_ratio': 0.0}, r'attn_ratio must be in \(0, 1\]'),
        ({'attn_ratio': 1.5}, r'attn_ratio must be in \(0, 1\]'),
        ({'attn_every': 0}, 'attn_every must be >= 1'),
        ({'attn_heads': 3}, 'must split into whole heads'),
    ],
)
def test_bad_knobs_are_refused_with_what_was_expected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('convformer_tiny', **kwargs)


def test_candidates_stay_flop_matched_within_5_percent():
    """Each registered candidate arm keeps its architecture's GMACs (attention counted) within 5%."""
    for name in ('convformer_tiny', 'convformer_tiny_early'):
        ref = count_macs(timm.create_model(name).eval(), (3, 224, 224)).gmacs
        for arm in candidates.ARMS:
            if arm == 'kv4' and VARIANTS[name].fusion != 'early':
                continue
            gmacs = count_macs(timm.create_model(f'{name}__{arm}').eval(), (3, 224, 224)).gmacs
            assert abs(gmacs / ref - 1) < 0.05, (name, arm, gmacs, ref)
