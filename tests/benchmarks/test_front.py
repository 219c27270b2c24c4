"""The accuracy-speed front: the dominance rule, its undecided cases, the int8 shift and the rank correlation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_zoo.benchmarks import front


def _accuracy(per_model: dict[str, list[float]]) -> dict:
    return {
        'runs': [
            {'model': m, 'seed': s, 'test_top1': v, 'architecture_version': 2 if m.startswith('convformer_') else None}
            for m, values in per_model.items()
            for s, v in enumerate(values)
        ]
    }


def _speed(per_model: dict[str, tuple[float, float, float]], mode: str = 'eager') -> dict:
    return {
        'models': {
            m: {
                'ours': m.startswith('convformer_'),
                'architecture_version': 2 if m.startswith('convformer_') else None,
                'modes': {mode: {'img_s': mid, 'img_s_min': lo, 'img_s_max': hi, 'error': None}},
            }
            for m, (mid, lo, hi) in per_model.items()
        }
    }


@pytest.fixture(autouse=True)
def _current_v2(monkeypatch):
    # the rows above carry architecture version 2: read them as current whatever the registry's version is today
    import hybrid_zoo.models.variants as variants

    monkeypatch.setattr(variants, 'measured_on_current', lambda name, row: True)


def _point(name, values, speed):
    pts = front.points(_accuracy({name: values}), _speed({name: speed}), 'eager')
    return pts[0]


def test_dominates_needs_both_axes_beyond_noise():
    fast_good = _point('a', [85.0, 85.5, 85.2], (100.0, 95.0, 105.0))
    slow_bad = _point('b', [82.0, 82.4, 82.1], (50.0, 48.0, 52.0))
    v = front.verdict(fast_good, slow_bad)
    assert v['status'] == 'dominates'
    assert v['speed_ratio'] == 2.0
    assert v['top1_diff'] == pytest.approx(3.067, abs=1e-3)
    assert front.verdict(slow_bad, fast_good)['status'] == 'dominated'


def test_overlapping_speed_ranges_are_undecided():
    a = _point('a', [85.0, 85.5, 85.2], (60.0, 50.0, 70.0))
    b = _point('b', [82.0, 82.4, 82.1], (55.0, 45.0, 61.0))
    v = front.verdict(a, b)
    assert v['status'] == 'undecided'
    assert 'speed ranges overlap' in v['why_undecided']


def test_accuracy_within_two_standard_errors_is_undecided():
    a = _point('a', [83.0, 82.0, 84.0], (100.0, 95.0, 105.0))
    b = _point('b', [82.5, 82.5, 82.5], (50.0, 48.0, 52.0))  # paired differences 0.5, -0.5, 1.5: mean 0.5, SE 0.58
    v = front.verdict(a, b)
    assert v['status'] == 'undecided'
    assert 'within 2 SE' in v['why_undecided']


def test_one_seed_has_no_standard_error_and_decides_nothing():
    a = _point('a', [90.0], (100.0, 95.0, 105.0))
    b = _point('b', [80.0], (50.0, 48.0, 52.0))
    v = front.verdict(a, b)
    assert v['status'] == 'undecided'
    assert v['top1_diff_se'] is None and 'no standard error' in v['why_undecided']


def test_trade_off_is_neither_dominating():
    fast_bad = _point('a', [80.0, 80.2, 80.1], (100.0, 95.0, 105.0))
    slow_good = _point('b', [85.0, 85.5, 85.2], (50.0, 48.0, 52.0))
    assert front.verdict(fast_bad, slow_good)['status'] == 'trade-off'


@given(
    st.lists(st.floats(70, 95), min_size=3, max_size=3),
    st.lists(st.floats(70, 95), min_size=3, max_size=3),
    st.tuples(st.floats(10, 200), st.floats(10, 200)),
)
def test_verdict_is_antisymmetric(acc_a, acc_b, speeds):
    a = _point('a', acc_a, (speeds[0], speeds[0] * 0.95, speeds[0] * 1.05))
    b = _point('b', acc_b, (speeds[1], speeds[1] * 0.95, speeds[1] * 1.05))
    flip = {'dominates': 'dominated', 'dominated': 'dominates', 'trade-off': 'trade-off', 'undecided': 'undecided'}
    assert front.verdict(b, a)['status'] == flip[front.verdict(a, b)['status']]


def test_int8_mode_shifts_every_seed_by_the_measured_change():
    acc = _accuracy({'m': [80.0, 81.0]})
    speed = _speed({'m': (120.0, 110.0, 125.0)}, mode='int8-pt2e')
    int8 = {'models': {'m': {'pt2e_top1_change': -0.5}}}
    (p,) = front.points(acc, speed, 'int8-pt2e', int8)
    assert p.per_seed == {0: 79.5, 1: 80.5}
    assert p.int8_change == -0.5
    assert front.points(acc, speed, 'eager', int8) == []  # no eager entry in that speed file


def test_rank_correlation_flags_a_reversed_order():
    imagenet = {'p1': (81.0, ''), 'p2': (80.0, ''), 'p3': (79.0, '')}
    acc = _accuracy({'p1': [80.0, 80.1], 'p2': [82.0, 82.1], 'p3': [84.0, 84.1], 'convformer_tiny': [90.0, 90.0]})
    speed = _speed({n: (50.0, 49.0, 51.0) for n in ('p1', 'p2', 'p3', 'convformer_tiny')})
    rc = front.rank_correlation(front.points(acc, speed, 'eager'), imagenet)
    assert rc['n'] == 3 and rc['rho'] == -1.0 and rc['positive'] is False  # ours never enter the correlation


def test_summary_renders_a_page_and_plots(tmp_path):
    acc = _accuracy({'convformer_tiny': [82.0, 82.5, 82.2], 'fastvit_t12': [84.0, 84.4, 84.5], 'p3': [70.0, 71, 70]})
    speed = _speed({'convformer_tiny': (60.0, 58.0, 62.0), 'fastvit_t12': (90.0, 85.0, 95.0), 'p3': (59, 50, 70)})
    summary = front.summarise(acc, speed, modes=('eager',))
    assert summary['eager']['dominated_by'] == {'convformer_tiny': ['fastvit_t12'], 'p3': ['fastvit_t12']}
    page = front.render_markdown(summary, title='Tiny front', sources=['fmnist-front96.json'])
    assert '`fastvit_t12` (1.50x, +2.07 pt)' in page
    assert 'on the front' in page and 'speed ranges overlap' in page
    fig = front.render_plot(summary, 'eager')
    fig.savefig(tmp_path / 'f.png')
    assert (tmp_path / 'f.png').stat().st_size > 1000


def test_paired_difference_uses_common_seeds_only():
    a = _point('a', [80.0, 81.0, 82.0], (1.0, 1.0, 1.0))
    b = front.Point('b', False, {0: 79.0, 2: 80.0}, 1.0, 1.0, 1.0)
    mean, se, n = front.paired_difference(a, b)
    assert n == 2 and mean == pytest.approx(1.5) and se == pytest.approx(0.5)
    empty = front.Point('c', False, {7: 1.0}, 1.0, 1.0, 1.0)
    assert math.isnan(front.paired_difference(a, empty)[0])


def test_write_front_writes_its_files_and_refuses_a_speed_file_without_the_modes(tmp_path):
    import json

    acc = _accuracy({'convformer_tiny': [82.0, 82.5, 82.2], 'fastvit_t12': [84.0, 84.4, 84.5]})
    speed = _speed({'convformer_tiny': (60.0, 58.0, 62.0), 'fastvit_t12': (90.0, 85.0, 95.0)})
    speed['reference'] = {'onednn_gflops': 431.0}
    speed['meta'] = {'date': '2026-12-07', 'cpu': 'AMD EPYC', 'threads': 2}
    (tmp_path / 'acc.json').write_text(json.dumps(acc))
    (tmp_path / 'speed.json').write_text(json.dumps(speed))
    summary = front.write_front(tmp_path / 'acc.json', tmp_path / 'speed.json', tmp_path / 'out', modes=('eager',))
    assert summary['meta']['reference_1x1_gflops'] == 431.0
    page = (tmp_path / 'out' / 'front-tiny.md').read_text()
    assert '431 GFLOP/s' in page and '![front, eager](front-tiny-eager.png)' in page
    assert (tmp_path / 'out' / 'front-tiny-eager.png').exists() and (tmp_path / 'out' / 'front-tiny.json').exists()
    with pytest.raises(ValueError, match=r"none has \['int8-pt2e'\]"):
        front.write_front(tmp_path / 'acc.json', tmp_path / 'speed.json', tmp_path / 'o2', modes=('int8-pt2e',))
    assert not (tmp_path / 'o2').exists()


def test_front_command_writes_the_front_under_runs_and_refuses_unusable_files(tmp_path, monkeypatch, capsys):
    import json

    from hybrid_zoo_cli import front as front_cli

    monkeypatch.chdir(tmp_path)
    accuracy = _accuracy({'convformer_a': [85.0, 85.4, 85.2], 'b': [82.0, 82.3, 82.1], 'c': [86.0, 86.5, 86.1]})
    speed = _speed({'convformer_a': (100.0, 95.0, 105.0), 'b': (50.0, 48.0, 52.0), 'c': (60.0, 58.0, 62.0)})
    for row, fast in zip(speed['models'].values(), (150.0, 70.0, 90.0), strict=True):
        row['modes']['int8-pt2e'] = {'img_s': fast, 'img_s_min': fast * 0.97, 'img_s_max': fast * 1.03, 'error': None}
    (tmp_path / 'acc.json').write_text(json.dumps(accuracy))
    (tmp_path / 'speed.json').write_text(json.dumps(speed))
    argv = ['--accuracy', 'acc.json', '--speed', 'speed.json', '--modes', 'eager', 'int8-pt2e']
    assert front_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert 'eager: 3 models, dominated by none: convformer_a, c (1 of 3 pairs left open by the rule)' in printed
    written = sorted(p.name for p in (tmp_path / 'runs' / 'front').iterdir())
    assert written == ['front-tiny-eager.png', 'front-tiny-int8-pt2e.png', 'front-tiny.json', 'front-tiny.md']
    summary = json.loads((tmp_path / 'runs' / 'front' / 'front-tiny.json').read_text())
    assert summary['eager']['dominated_by'] == {'b': ['convformer_a', 'c']}  # slower and less accurate than both
    # a missing file, a file that is not JSON, a speed file without a mode asked for: one line, exit 2
    (tmp_path / 'broken.json').write_text('{not json')
    for bad in (
        ['--accuracy', 'nope.json', '--speed', 'speed.json'],
        ['--accuracy', 'acc.json', '--speed', 'broken.json'],
        ['--accuracy', 'acc.json', '--speed', 'speed.json', '--modes', 'compiled'],
    ):
        assert front_cli.main(bad) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith('hybrid-zoo front: ') and len(err.strip().splitlines()) == 1, err


def test_pick_table_and_report_block_render_from_the_written_front(tmp_path):
    import json

    from hybrid_zoo.benchmarks import docs

    acc = _accuracy({'convformer_tiny': [82.0, 82.5, 82.2], 'fastvit_t12': [84.0, 84.4, 84.5], 'p3': [70.0, 71, 70]})
    speed = _speed({'convformer_tiny': (60.0, 58.0, 62.0), 'fastvit_t12': (90.0, 85.0, 95.0), 'p3': (59, 50, 70)})
    int8 = _speed({'convformer_tiny': (120.0, 110.0, 125.0), 'fastvit_t12': (100.0, 95.0, 105.0)}, 'int8-pt2e')
    for name, row in int8['models'].items():
        speed['models'][name]['modes'].update(row['modes'])
    speed['meta'] = {'date': '2026-12-07', 'cpu': 'AMD EPYC', 'threads': 2}
    (tmp_path / 'acc.json').write_text(json.dumps(acc))
    (tmp_path / 'speed.json').write_text(json.dumps(speed))
    front.write_front(tmp_path / 'acc.json', tmp_path / 'speed.json', tmp_path, modes=('eager', 'int8-pt2e'))
    table = docs.front_pick(tmp_path)
    lines = table.splitlines()
    assert lines[0] == (
        '| model (ours bold) | top-1 % +- SE (seeds) | eager img/s | dominated in eager by | int8 img/s '
        '| dominated in int8 by |'
    )
    # fastest eager first; p3 has no int8 row; convformer_tiny is dominated eager, not in int8 (it is faster there)
    assert lines[2].startswith('| `fastvit_t12` | 84.30 +- 0.15 (3) | 90.0 | - | 100.0 | - |')
    assert '| **`convformer_tiny`** | 82.23 +- 0.14 (3) | 60.0 | `fastvit_t12` | 120.0 | - |' in table
    assert '| `p3` | 70.33 +- 0.33 (3) | 59.0 | `fastvit_t12` | - | - |' in table
    assert table.endswith('pairs left open: eager 1 of 3, int8 1 of 1.')
    page = docs.BLOCKS['front_tiny'](tmp_path)
    assert not page.startswith('#') and '](../../model_cards/results/front-tiny-eager.png)' in page
    assert docs.front_pick(tmp_path / 'none') is None and docs.BLOCKS['front_tiny'](tmp_path / 'none') is None
    assert front.pick_table({'compiled': {'points': [], 'pairs': [], 'dominated_by': {}}}) is None
