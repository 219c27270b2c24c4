"""``hybrid-zoo describe``: per-part shapes, params and GMACs that add up to the whole model."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torch

import hybrid_zoo
from hybrid_zoo.describe import describe
from hybrid_zoo.flops import count_macs, count_params


@pytest.mark.parametrize('name', ['convformer_tiny_early', 'convformer_tiny_late'])
def test_parts_add_up_to_the_model(name):
    rows = describe(name, (96, 130), in_chans=1)
    model = timm.create_model(name, in_chans=1).eval()
    assert [r.name for r in rows] == ['stem', 'stage 1', 'stage 2', 'stage 3', 'stage 4', 'head']
    with torch.no_grad():
        features = model.forward_features(torch.zeros(1, 1, 96, 130))
    assert rows[-2].shape == tuple(features.shape) == (1, model.num_features, 3, 5)  # ceil(96/32), ceil(130/32)
    assert rows[-1].shape == (1, 1000) and rows[0].shape == (1, 64, 24, 33)
    assert sum(r.params_m for r in rows) == pytest.approx(count_params(model) / 1e6)
    whole = count_macs(model, (1, 96, 130))
    assert sum(r.gmacs for r in rows) == pytest.approx(whole.gmacs, rel=1e-6)
    assert sum(r.attention_gmacs for r in rows) == pytest.approx(whole.attention_gmacs, rel=1e-6)
    first = hybrid_zoo.models.variants.FIRST_ATTENTION_STAGE[name.rsplit('_', 1)[1]]
    assert [('attention' in r.what) for r in rows[1:5]] == [i >= first for i in range(4)]


def test_cli_prints_the_table_and_rejects_bad_input():
    run = [sys.executable, '-m', 'hybrid_zoo_cli', 'describe']
    out = subprocess.run([*run, 'convformer_small'], capture_output=True, text=True, check=True).stdout
    assert (
        '(1, 320, 14, 14)' in out
        and '15 blocks: 8 attention alternating with 7 conv, width 320' in out
        and out.splitlines()[-1].startswith('total')
    )
    bad = subprocess.run([*run, 'convformer_tiny', '--img-size', '16'], capture_output=True, text=True)
    assert bad.returncode == 2 and 'expected height and width >= 32' in bad.stderr
    unknown = subprocess.run([*run, 'convformer_s18'], capture_output=True, text=True)
    assert unknown.returncode == 2 and 'expected one of convformer_tiny_early' in unknown.stderr
