"""The architecture candidates the lab builds: the rejected arms' knobs are not product arguments, so the lab swaps
the modules they change; every arm still builds what its committed results record (parameters and GMACs), runs and
folds exactly, and refuses what it cannot build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models import reparameterize_model
from torch import nn

import hybrid_zoo  # noqa: F401
from hybrid_zoo.benchmarks import candidates
from hybrid_zoo.benchmarks.candidates import LAB_KNOBS, apply_lab_knobs, arm_kwargs, build_arm
from hybrid_zoo.flops import count_macs
from hybrid_zoo.models.variants import VARIANTS_V1

RESULTS = Path(__file__).resolve().parents[2] / 'model_cards' / 'results'
SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 3, 2)}
LAB_ARMS = {arm for arm, change in candidates.ARMS.items() if set(change) & set(LAB_KNOBS)}
ARMS = {**candidates.ARMS, **candidates.ARMS_V3}
REGISTERED = (*candidates.CANDIDATES, *candidates.CANDIDATES_V3)


def whole_kwargs(name: str) -> dict:
    """The constructor kwargs of the registered arm ``name`` (``<architecture>__<arm>``)."""
    architecture, arm = name.split(candidates.SEP)
    if arm in candidates.ARMS:
        return arm_kwargs(architecture, arm)
    return candidates.arm_kwargs_v3(architecture, arm)


def _recorded_arms() -> list[tuple[str, str, dict, dict]]:
    """Every measured row of a candidate arm in the committed results: (file, registered arm name, how it was built
    (create_model kwargs and input shape), the row). Bench runs name the arm; comparison runs name the architecture
    and the arm as their ``variant``."""
    rows = []
    for path in sorted(RESULTS.glob('*.json')):
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            continue
        if str(data.get('schema', '')).startswith('hybrid_zoo.bench/'):
            s = data['meta']['settings']
            build = {'kwargs': {'num_classes': s['num_classes']}, 'shape': (3, s['img_size'], s['img_size'])}
            rows += [(path.name, n, build, m) for n, m in data['models'].items() if n in REGISTERED]
        elif data.get('variant') in ARMS and 'recipe' in data and 'runs' in data:
            r = data['recipe']
            build = {
                'kwargs': {'num_classes': 10, 'in_chans': r['in_chans']},
                'shape': (r['in_chans'],) + (r['img_size'],) * 2,
            }
            for run in data['runs']:
                name = f'{run["model"]}{candidates.SEP}{data["variant"]}'
                if name in REGISTERED:
                    recorded = run.get('model_kwargs', data.get('model_kwargs') or {})
                    rows.append((path.name, name, {**build, 'model_kwargs': recorded}, run))
    return rows


RECORDED = _recorded_arms()


def test_every_rejected_arm_with_a_lab_knob_is_recorded():
    """The check below covers each arm the product cannot build (the results files were found and read)."""
    assert {name.split(candidates.SEP)[1] for _, name, _, _ in RECORDED} >= LAB_ARMS
    assert {'nodw', 'sha', 'sha_nodw', 'alt2_nodw', 'dw5'} <= LAB_ARMS


@pytest.mark.parametrize(
    ('source', 'name', 'build', 'row'), RECORDED, ids=[f'{f}:{n}:{r.get("seed", "")}' for f, n, _, r in RECORDED]
)
def test_arm_builds_what_its_results_record(source, name, build, row):
    """Parameter count and GMACs (at the recorded input, attention counted) equal the recorded ones, and a comparison
    run's recorded ``model_kwargs`` are the arm's."""
    model = timm.create_model(name, **build['kwargs']).eval()
    params_m = round(sum(p.numel() for p in model.parameters()) / 1e6, 3)
    assert params_m == row['params_m'], (source, name)
    assert round(count_macs(model, build['shape']).gmacs, 4) == row['gmacs'], (source, name)
    recorded = json.loads(json.dumps(build.get('model_kwargs', {})))
    whole = json.loads(json.dumps(whole_kwargs(name)))
    assert recorded.items() <= whole.items(), (source, name, recorded, whole)


@pytest.mark.parametrize(
    'lab',
    [
        {'ffn_dw': False},
        {'attn_ratio': 0.25, 'attn_heads': 1},
        {'attn_ratio': 0.5, 'attn_heads': 2},
        {'conv_kernel_size': 5},
        {'ffn_dw': False, 'attn_ratio': 0.5, 'attn_heads': 1, 'conv_kernel_size': 3},
    ],
)
@pytest.mark.parametrize('attn_every', [1, 2])
def test_lab_knobs_build_run_and_fold_exactly(lab, attn_every):
    torch.manual_seed(0)
    model = build_arm('convformer_tiny', num_classes=5, attn_every=attn_every, **SMALL, **lab).eval()
    assert model._model_args.items() >= lab.items()  # what config.json would record, so the arm can be rebuilt
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        folded = reparameterize_model(model)(x)
    assert ref.shape == (2, 5)
    torch.testing.assert_close(folded, ref, rtol=1e-4, atol=1e-5)


def test_every_parameter_of_a_lab_arm_trains():
    """A swapped module is part of the model: it gets gradients (what timm's own suite checks of every model)."""
    model = build_arm('convformer_tiny', num_classes=4, **SMALL, attn_ratio=0.25, attn_heads=1, conv_kernel_size=5)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_single_head_on_a_quarter_of_the_channels():
    model = build_arm('convformer_tiny', attn_ratio=0.25, attn_heads=1, attn_every=1)
    attn = model.stages[2].blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (1, 64)
    assert attn.q.out_channels == 64 and attn.kv.out_channels == 128 and attn.proj.out_channels == 256
    assert isinstance(build_arm('convformer_tiny', ffn_dw=False).stages[3].blocks[1].ffn.dw, nn.Identity)


def test_product_values_swap_nothing():
    """At the values ``LAB_KNOBS`` records, the lab builds the product exactly (same weights from the same seed)."""
    torch.manual_seed(0)
    product = timm.create_model('convformer_tiny', **SMALL)
    torch.manual_seed(0)
    lab = apply_lab_knobs(timm.create_model('convformer_tiny', **SMALL), **LAB_KNOBS)
    assert product.state_dict().keys() == lab.state_dict().keys()
    assert all(torch.equal(v, lab.state_dict()[k]) for k, v in product.state_dict().items())


def test_swapped_modules_are_initialised_like_the_model():
    """Trunc-normal (std 0.02) weights and zero biases, as the constructor initialises its own convs."""
    torch.manual_seed(0)
    attn = build_arm('convformer_base', attn_ratio=0.25, attn_heads=1).stages[2].blocks[1].attn
    assert attn.kv.weight.std().item() == pytest.approx(0.02, rel=0.1) and attn.kv.bias.abs().sum() == 0


@pytest.mark.parametrize(
    ('lab', 'match'),
    [
        ({'attn_ratio': 0.0}, r'attn_ratio must be in \(0, 1\], got 0.0'),
        ({'attn_ratio': 1.5}, r'attn_ratio must be in \(0, 1\], got 1.5'),
        ({'attn_heads': 3}, 'attention width 256 must split into whole heads: got num_heads 3'),
        ({'attn_heads': -1}, 'attn_heads must be >= 0, got -1'),
        ({'conv_kernel_size': 4}, 'conv_kernel_size must be a positive odd number, got 4'),
        ({'conv_kernel_size': 0}, 'conv_kernel_size must be a positive odd number, got 0'),
    ],
)
def test_bad_lab_knobs_are_refused_with_what_was_expected(lab, match):
    with pytest.raises(ValueError, match=match):
        build_arm('convformer_tiny', **lab)


def test_an_attention_width_heads_cannot_split_is_refused():
    with pytest.raises(ValueError, match=r'attention width \(48\) must be a multiple of head_dim \(32\)'):
        build_arm('convformer_tiny', **SMALL, attn_ratio=0.5)  # 96 channels: 48, which 32-channel heads do not split


def test_dw5_is_v1_with_five_by_five_depthwise_convs():
    v1, dw5 = timm.create_model('convformer_tiny__v1'), timm.create_model('convformer_tiny__dw5')
    assert [len(s.blocks) for s in dw5.stages] == list(VARIANTS_V1['convformer_tiny'].depths)
    kernels = {n: m.kernel_size for n, m in dw5.named_modules() if n.endswith('dw.conv')}
    assert kernels and set(kernels.values()) == {(5, 5)}
    assert {n: m.kernel_size for n, m in v1.named_modules() if n.endswith('dw.conv')}.keys() == kernels.keys()
