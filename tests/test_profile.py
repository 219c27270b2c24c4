"""``hybrid-zoo profile``: time per kind of operation, FLOPs that add up, and the ceiling it reports."""

from __future__ import annotations

import json

import pytest

from hybrid_zoo import profile
from hybrid_zoo.bench import MALLOC_NO_TRIM
from hybrid_zoo.flops import count_macs


def test_categories_cover_the_forward_and_count_flops():
    p = profile.profile_model('convformer_tiny', batch=2, img_size=64, iters=1, ref=50e9)
    cats = p['categories']
    assert sum(c['share_pct'] for c in cats.values()) == pytest.approx(100, abs=0.5)
    for kind in ('gemm', 'depthwise', 'dense kxk', 'attention', 'activation'):
        assert cats[kind]['ms'] > 0, kind
    assert cats['attention']['gflop'] > 0 and cats['gemm']['gflop'] > cats['depthwise']['gflop']
    measured = sum(c['gflop'] for k, c in cats.items() if k != 'rest') + cats['rest']['gflop']
    import timm

    counted = 2 * 2 * count_macs(timm.create_model('convformer_tiny').eval(), (3, 64, 64)).gmacs  # batch 2
    assert measured == pytest.approx(counted, rel=0.02) and p['gflop_per_batch'] == pytest.approx(counted, abs=0.1)
    assert p['gflop_s'] == pytest.approx(p['gflop_per_batch'] / (p['ms_per_batch'] / 1e3), rel=0.02)
    assert 0 < p['ceiling_pct_of_reference'] and p['pct_of_reference'] > 0


def test_cli_writes_json_md_png(tmp_path, monkeypatch):
    for k, v in MALLOC_NO_TRIM.items():  # already set: main() runs here instead of re-executing itself
        monkeypatch.setenv(k, v)
    out = tmp_path / 'profile-cpu.json'
    argv = ['--models', 'test_convnext', '--batch-size', '1', '--img-size', '64', '--iters', '1', '--out', str(out)]
    assert profile.main(argv) == 0
    data = json.loads(out.read_text())
    assert [m['model'] for m in data['models']] == ['test_convnext'] and data['reference_gflop_s'] > 0
    assert '`test_convnext`' in out.with_suffix('.md').read_text()
    assert out.with_suffix('.png').stat().st_size > 0


def test_exec_with_no_trim_restarts_the_process_with_the_setting():
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in MALLOC_NO_TRIM}
    code = "from hybrid_zoo.bench import exec_with_no_trim; exec_with_no_trim(['-c', 'import os; print(os.environ[\"MALLOC_TRIM_THRESHOLD_\"])'])"
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == MALLOC_NO_TRIM['MALLOC_TRIM_THRESHOLD_']
