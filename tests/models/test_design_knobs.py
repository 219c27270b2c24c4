"""The architecture v2 design knob of the product (``attn_every``): it builds, runs, folds exactly, and refuses what
it cannot build; the registered v2 is v1 with the adopted arm, FLOP-matched; v1 weights are refused by v2 and load
into v1. The knobs of the rejected arms live in the lab: ``tests/benchmarks/test_candidates.py``."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models import reparameterize_model

import hybrid_zoo  # noqa: F401
from hybrid_zoo.benchmarks import candidates
from hybrid_zoo.flops import count_macs
from hybrid_zoo.layers import AttnBlock, ConvBlock
from hybrid_zoo.models.variants import V2_ATTN_EVERY, VARIANTS, VARIANTS_V1

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 3, 2)}


@pytest.mark.parametrize('kwargs', [{'attn_every': 1}, {'attn_every': 2}, {'attn_every': 3}])
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


def test_constructor_defaults_are_v1():
    """``attn_every`` at its default builds the v1 architecture: the same parameter names and shapes."""
    v1 = timm.create_model('convformer_tiny__v1')
    explicit = timm.create_model('convformer_tiny', depths=(2, 2, 8, 2), attn_every=1)
    assert {k: v.shape for k, v in v1.state_dict().items()} == {k: v.shape for k, v in explicit.state_dict().items()}


@pytest.mark.parametrize('size', ['tiny', 'small', 'base'])
def test_registered_v2_is_v1_with_the_adopted_arm_flop_matched(size):
    """Early and mid are v1 + alt2, each within 5% of its v1 GMACs, the placements within 5% of each other; late
    keeps v1."""
    names = [n for n in VARIANTS if n.split('_')[1] == size]
    gmacs = {}
    for name in names:
        v2, v1 = VARIANTS[name], VARIANTS_V1[name]
        gmacs[name] = count_macs(timm.create_model(name).eval(), (3, 224, 224)).gmacs
        if v1.fusion == 'late':
            assert v2 == v1
            continue
        assert v2.attn_every == V2_ATTN_EVERY == candidates.ARMS['alt2']['attn_every']
        assert (v2.widths, v2.fusion, v2.kv_reductions, v2.head_dim) == (
            v1.widths,
            v1.fusion,
            v1.kv_reductions,
            v1.head_dim,
        )
        assert v2.depths[:2] == v1.depths[:2] and v2.depths[3] == v1.depths[3]
        ref = count_macs(timm.create_model(f'{name}__v1').eval(), (3, 224, 224)).gmacs
        assert abs(gmacs[name] / ref - 1) < 0.05, (name, gmacs[name], ref)
    assert max(gmacs.values()) / min(gmacs.values()) - 1 < 0.05, gmacs


def test_v1_weights_are_refused_by_v2_and_load_into_v1():
    v1 = timm.create_model('convformer_tiny__v1', num_classes=4).eval()
    overlay = {'state_dict': v1.state_dict(), 'num_classes': 4}  # same head: nothing re-initialised
    with pytest.raises(ValueError, match=r'depths 2-2-8-2 .* pass depths=\(2, 2, 8, 2\), attn_every=1') as err:
        timm.create_model('convformer_tiny', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=4)
    assert 'the model has depths 2-2-10-2 with attention in blocks - | - | 1,3,5,7,9 | 1' in str(err.value)
    # the kwargs the message names build v1, and the weights load exactly
    again = timm.create_model(
        'convformer_tiny', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=4, depths=(2, 2, 8, 2),
        attn_every=1,
    ).eval()  # fmt: skip
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), v1(x), rtol=0, atol=0)


def test_saved_config_records_the_whole_architecture(tmp_path):
    """config.json's model_args rebuild what was saved, whatever the package's defaults become."""
    import json

    model = timm.create_model('convformer_tiny_early', num_classes=3)
    timm.models.save_for_hf(model, tmp_path, safe_serialization=True)
    args = json.loads((tmp_path / 'config.json').read_text())['model_args']
    assert args['depths'] == list(VARIANTS['convformer_tiny_early'].depths) and args['attn_every'] == V2_ATTN_EVERY
    assert args['num_classes'] == 3 and args['fusion'] == 'early'


@pytest.mark.parametrize('every', [0, -1])
def test_bad_knobs_are_refused_with_what_was_expected(every):
    with pytest.raises(ValueError, match=f'attn_every must be >= 1, got {every}'):
        timm.create_model('convformer_tiny', attn_every=every)


def test_candidates_stay_flop_matched_within_5_percent():
    """Each registered candidate arm keeps its architecture's GMACs (attention counted) within 5%."""
    for name in ('convformer_tiny', 'convformer_tiny_early'):
        ref = count_macs(timm.create_model(f'{name}__v1').eval(), (3, 224, 224)).gmacs
        for arm in candidates.ARMS:
            if arm == 'kv4' and VARIANTS_V1[name].fusion != 'early':
                continue
            gmacs = count_macs(timm.create_model(f'{name}__{arm}').eval(), (3, 224, 224)).gmacs
            assert abs(gmacs / ref - 1) < 0.05, (name, arm, gmacs, ref)
