"""``hybrid-zoo describe``: per-part shapes, params and GMACs that add up to the whole model."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import hypothesis.strategies as st
import pytest
import timm
import torch
from hypothesis import given, settings

import hybrid_zoo
from hybrid_zoo.describe import describe
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo_cli.describe import build_parser
from hybrid_zoo_cli.describe import main as describe_main


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
    assert bad.returncode == 2 and '--img-size: expected an integer from 32 to 1024 px' in bad.stderr
    unknown = subprocess.run([*run, 'convformer_s18'], capture_output=True, text=True)
    assert unknown.returncode == 2 and 'expected one of convformer_tiny_early' in unknown.stderr


SIZES = st.one_of(st.integers(min_value=-(10**6), max_value=10**6), st.text(max_size=4))


@settings(max_examples=150, deadline=None)
@given(sizes=st.lists(SIZES, min_size=1, max_size=2), chans=SIZES)
def test_sizes_are_bounded_before_anything_is_built(sizes, chans):
    """Any --img-size / --in-chans: the parser accepts exactly the sizes describe can run without allocating
    gigabytes, and says which flag, range and value it refused (exit 2, no traceback)."""
    argv = ['convformer_tiny', '--img-size', *map(str, sizes), '--in-chans', str(chans)]

    def in_range(text, low: int, high: int) -> bool:
        try:
            return low <= int(str(text)) <= high
        except ValueError:
            return False

    sizes_ok = all(in_range(s, 32, 1024) for s in sizes)
    chans_ok = in_range(chans, 1, 64)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:
            assert e.code == 2 and not (sizes_ok and chans_ok)
            flag = '--in-chans' if sizes_ok else '--img-size'
            assert f'{flag}: expected an integer from' in stderr.getvalue() and 'Traceback' not in stderr.getvalue()
            return
    assert sizes_ok and chans_ok and args.in_chans == int(str(chans))


def test_describe_refuses_sizes_that_would_allocate_gigabytes():
    for size, chans in (((20000, 20000), 3), ((224, 224), 100_000), ((-32, -32), 3), ((224, 224), 0)):
        with pytest.raises(ValueError, match='expected'):
            describe('convformer_tiny', size, chans)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as caught:
        describe_main(['convformer_tiny', '--img-size', '20000'])
    assert caught.value.code == 2 and 'got' in stderr.getvalue()
