"""Counting, folding, compiling and exporting: the deployment half of the model contract."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import hybrid_zoo
from hybrid_zoo.atomic import read_json
from hybrid_zoo.benchmarks.model_stats import model_stats
from hybrid_zoo.benchmarks.results import RESULTS_DIR
from hybrid_zoo.deploy import export_onnx, graph_breaks, onnx_max_abs_diff, reparameterize
from hybrid_zoo.flops import count_macs, count_params

NAMES = hybrid_zoo.list_variants()
TINY = [n for n in NAMES if n.startswith('convformer_tiny')]
RANGES = {'tiny': ((10, 14), (1.9, 2.4)), 'small': ((24, 31), (3.9, 4.6)), 'base': ((40, 52), (7.8, 9.2))}


class _OnlyAttention(torch.nn.Module):
    def forward(self, x):
        q = x.view(2, 4, 49, 32)  # (B, C, H, W) -> (B, nh, N, hd)
        return F.scaled_dot_product_attention(q, q[:, :, :20], q[:, :, :20])


def test_attention_is_counted_once_by_formula():
    macs = count_macs(_OnlyAttention(), input_size=(4 * 49, 32, 1), batch_size=2)
    expected = 2 * 2 * 4 * 49 * 20 * (32 + 32) / 2 / 2  # 2 B nh Nq Nk (d_qk + d_v) FLOPs -> MACs per image
    assert macs.attention_gmacs * 1e9 == pytest.approx(expected)
    assert macs.gmacs * 1e9 == pytest.approx(expected)


def test_committed_stats_are_current_in_range_and_flop_matched():
    stats = read_json(RESULTS_DIR / 'model_stats.json')
    assert set(stats['models']) == set(NAMES)
    for name, row in stats['models'].items():
        (p_lo, p_hi), (g_lo, g_hi) = RANGES[row['size']]
        assert p_lo <= row['params_m'] <= p_hi, name
        assert g_lo <= row['gmacs'] <= g_hi, name
        assert row['attention_gmacs'] > 0
    assert all(spread <= 0.05 for spread in stats['flop_spread_by_size'].values()), stats['flop_spread_by_size']
    for name in TINY:  # the file is what the code computes today
        fresh = model_stats(name)
        assert fresh['gmacs'] == pytest.approx(stats['models'][name]['gmacs'], rel=1e-3)
        assert fresh['params_m'] == pytest.approx(stats['models'][name]['params_m'], rel=1e-4)


def test_mid_attention_share_matches_analytic_count():
    # convformer_tiny (v2): attention in 5 of the 10 S3 blocks at 14x14 tokens (dim 256) and in 1 of the 2 S4 blocks
    # at 7x7 (dim 384), no kv pooling
    analytic = (5 * 2 * 196 * 196 * 256 + 1 * 2 * 49 * 49 * 384) / 1e9
    assert count_macs(timm.create_model('convformer_tiny')).attention_gmacs == pytest.approx(analytic)
    assert count_params(timm.create_model('convformer_tiny')) == sum(
        p.numel() for p in timm.create_model('convformer_tiny').parameters()
    )


@pytest.mark.parametrize('name', NAMES)
def test_reparameterize_folds_every_batchnorm_exactly(name):
    model = timm.create_model(name, num_classes=10).eval()
    _perturb_batchnorm(model)
    folded = reparameterize(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for shape in [(2, 3, 64, 64), (1, 3, 97, 130)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=0)
    cl = torch.randn(2, 3, 96, 96).to(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(folded.to(memory_format=torch.channels_last)(cl), model(cl), atol=1e-4, rtol=0)


def _perturb_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics and affine terms, so folding is actually exercised."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
        if hasattr(m, 'gamma'):
            m.gamma.data.fill_(0.5)


@pytest.mark.export
@pytest.mark.parametrize('name', TINY)
def test_compile_has_zero_graph_breaks(name):
    model = timm.create_model(name).eval()
    x = torch.randn(2, 3, 96, 96)
    assert graph_breaks(model, x) == (1, 0)
    assert graph_breaks(reparameterize(model), x) == (1, 0)


@pytest.mark.export
@pytest.mark.parametrize('name, exporter', [(n, 'torchscript') for n in TINY] + [('convformer_tiny', 'dynamo')])
def test_onnx_export_matches_eager_at_dynamic_shapes(name, exporter, tmp_path):
    model = timm.create_model(name).eval()
    _perturb_batchnorm(model)
    for form, m in (('eager', model), ('reparam', reparameterize(model))):
        path = export_onnx(m, tmp_path / f'{form}.onnx', exporter=exporter)
        assert onnx_max_abs_diff(m, path, [(1, 3, 224, 224), (2, 3, 193, 250), (3, 3, 96, 96)]) < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ['eager.onnx', 'reparam.onnx']  # no temp files left


def test_onnx_opset_below_17_is_refused(tmp_path):
    with pytest.raises(ValueError, match='opset must be >= 17'):
        export_onnx(timm.create_model('convformer_tiny'), tmp_path / 'x.onnx', opset=13)
