"""README blocks are generated from result files, idempotently; stale blocks are detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_zoo.benchmarks.docs import (
    ROOT,
    check_documents,
    dangling_links,
    render_readme,
    unquoted_numbers,
    unserved_pushes,
    unstopped_jobs,
)
from hybrid_zoo.benchmarks.results import RESULTS_DIR


def test_blocks_are_filled_from_results_and_rendering_is_idempotent(tmp_path):
    text = 'intro\n<!-- BEGIN model_table -->\n<!-- END model_table -->\n<!-- BEGIN bench_table -->\nold\n<!-- END bench_table -->\n'
    once = render_readme(text, RESULTS_DIR)
    stats = json.loads((RESULTS_DIR / 'model_stats.json').read_text())
    for name, row in stats['models'].items():
        assert f'| `{name}` |' in once and f'{row["gmacs"]:.3f}' in once
    assert render_readme(once, RESULTS_DIR) == once
    empty = render_readme(text, tmp_path)  # no result files: the block says so instead of keeping stale numbers
    assert 'No results yet' in empty and 'old' not in empty


def test_design_and_pretrained_blocks(tmp_path):
    def fm(top1, std, seeds=2):
        return {'top1': top1, 'top1_std': std, 'seeds': seeds}

    base = {'models': {'convformer_tiny': fm(80.0, 0.5), 'convnext_nano': fm(79.0, 0.2)}}
    var = {'variant': 'ls1', 'model_kwargs': {'ls_init_value': 1.0}, 'models': {'convformer_tiny': fm(82.5, 0.3)}}
    (tmp_path / 'fmnist-cpu64.json').write_text(json.dumps(base))
    (tmp_path / 'fmnist-cpu64-ls1.json').write_text(json.dumps(var))
    tags = {'convformer_tiny.fmnist_64': {'repo_id': 'hybrid-zoo/convformer_tiny.fmnist_64', 'test_top1': 82.7}}
    tags['convformer_tiny.fmnist_64'].update(recipe='cpu64', seed=1, commit='0123456789abcdef')
    (tmp_path / 'pretrained.json').write_text(json.dumps({'meta': {'date': '2026-11-29'}, 'tags': tags}))
    text = '<!-- BEGIN design_table -->\n<!-- END design_table -->\n<!-- BEGIN pretrained_table -->\n<!-- END pretrained_table -->\n'
    out = render_readme(text, tmp_path)
    assert '| `convformer_tiny` | 80.00 +- 0.50 (2) | 82.50 +- 0.30 (2) | +2.50 | - |' in out  # both v1
    assert 'convnext_nano' not in out  # only models the variant changed
    assert (
        '| `convformer_tiny.fmnist_64` | `hybrid-zoo/convformer_tiny.fmnist_64` | 82.70 | cpu64, seed 1 | 0123456789 |'
        in out
    )


def test_kv_ab_block_reads_its_results_file():
    text = render_readme('<!-- BEGIN kv_ab_table -->\n<!-- END kv_ab_table -->\n', RESULTS_DIR)
    data = json.loads((RESULTS_DIR / 'ab-kv-pooling.json').read_text())
    assert f'speed-up {data["speedup"]:.3f}x' in text and '| kv_pool_stride16 |' in text


def test_comparison_tables_follow_the_benchmark(tmp_path):
    import shutil

    from hybrid_zoo_cli import render as render_cli

    results = tmp_path / 'results'
    results.mkdir()
    for name in ('fmnist-cpu64.json', 'bench-cpu.json', 'profile-cpu.json'):
        shutil.copy(RESULTS_DIR / name, results / name)
    readme = tmp_path / 'README.md'
    readme.write_text('<!-- BEGIN fmnist_table -->\n<!-- END fmnist_table -->\n')
    argv = ['--readme', str(readme), '--results', str(results), '--no-figures']
    assert render_cli.main(argv) == 0 and render_cli.main([*argv, '--check']) == 0
    for name in ('fmnist-cpu64.md', 'profile-cpu.md'):
        assert (results / name).read_text() == (RESULTS_DIR / name).read_text(), name
    # a new benchmark run changes the speed column and the verdicts: both are stale until re-rendered
    bench = json.loads((results / 'bench-cpu.json').read_text())
    bench['models']['convformer_tiny_late']['infer_img_s'] = 123.4
    label = 'convformer_small_late img/s >= 1.4x coatnet_0_rw_224'
    next(t for t in bench['targets'] if t['label'] == label).update(measured=1.5, passed=True)
    (results / 'bench-cpu.json').write_text(json.dumps(bench))
    assert render_cli.main([*argv, '--check']) == 1
    assert render_cli.main(argv) == 0 and render_cli.main([*argv, '--check']) == 0
    assert '| 123.4 |' in (results / 'fmnist-cpu64.md').read_text() and '| 123.4 |' in readme.read_text()
    profile = json.loads((results / 'profile-cpu.json').read_text())
    assert next(t for t in profile['targets'] if t['target'] == label)['verdict'] == 'met'


def test_kernel_levers_block_reads_its_results_file():
    text = render_readme('<!-- BEGIN kernel_levers_table -->\n<!-- END kernel_levers_table -->\n', RESULTS_DIR)
    data = json.loads((RESULTS_DIR / 'kernel-levers.json').read_text())
    for row in data['levers']:
        assert f'| {row["lever"]} |' in text and f'| {row["speedup"]:.2f}x |' in text
    assert 'Faster than what the models use: ' + (', '.join(data['faster_than_used']) or 'none') in text


def test_targets_block_sets_each_target_of_v2_beside_v1(tmp_path):
    def target(model, measured, passed, metric='infer_img_s'):
        label = f'{model} img/s >= 1.5x coatnet_nano_rw_224'
        return dict(
            label=label, model=model, metric=metric, measured=measured, low=measured, high=measured, passed=passed
        )

    def bench(date, gflops, targets):
        return {'meta': {'date': date}, 'reference': {'onednn_gflops': gflops}, 'targets': targets}

    v1 = bench('2026-11-29', 480.0, [target('convformer_tiny', 1.3, False), target('convformer_tiny_late', 1.6, True)])
    v2 = bench('2026-12-03', 410.0, [target('convformer_tiny', 1.6, True), target('convformer_tiny_late', 1.8, True)])
    block = '<!-- BEGIN targets_v1_v2 -->\n<!-- END targets_v1_v2 -->\n'
    (tmp_path / 'bench-cpu.json').write_text(json.dumps(v2))
    assert 'No results yet' in render_readme(block, tmp_path)  # without v1's run there is nothing to set beside
    (tmp_path / 'bench-cpu-v1.json').write_text(json.dumps(v1))
    out = render_readme(block, tmp_path)
    assert '| convformer_tiny img/s >= 1.5x coatnet_nano_rw_224 | 1.3x [1.3-1.3] | 1.6x [1.6-1.6] | yes |' in out
    assert 'v2 meets 2 of 2 targets, v1 met 1' in out
    assert 'moved by up to 12%' in out  # the unchanged late model: 1.8 / 1.6 - 1, the machines' drift


def test_fusion_ab_block_reads_its_results_file():
    text = render_readme('<!-- BEGIN fusion_ab_table -->\n<!-- END fusion_ab_table -->\n', RESULTS_DIR)
    data = json.loads((RESULTS_DIR / 'ab-pointwise-fusion.json').read_text())
    for name, row in data['models'].items():
        assert f'| `{name}` | {row["fused_modules"]} |' in text and f'| {row["speedup"]:.3f}x |' in text
    assert f'median speed-up {data["speedup_median"]:.3f}x' in text


def test_a_design_change_is_set_beside_its_own_architecture_not_a_later_default(tmp_path):
    def fm(top1, version=None):
        row = {'top1': top1, 'top1_std': 0.1, 'seeds': 2}
        return row if version is None else {**row, 'architecture_version': version}

    current = {'models': {'convformer_tiny': fm(90.0, 2), 'convformer_tiny_late': fm(85.0)}}  # late: v1 unchanged
    v1 = {
        'variant': 'v1',
        'model_kwargs': {},
        'models': {'convformer_tiny': fm(80.0), 'convformer_tiny_late': fm(85.0)},
    }
    var = {'variant': 'dw5', 'model_kwargs': {'conv_kernel_size': 5},
           'models': {'convformer_tiny': fm(81.0), 'convformer_tiny_late': fm(84.0)}}  # fmt: skip
    (tmp_path / 'fmnist-cpu64.json').write_text(json.dumps(current))
    (tmp_path / 'fmnist-cpu64-dw5.json').write_text(json.dumps(var))
    block = '<!-- BEGIN design_table -->\n<!-- END design_table -->\n'
    out = render_readme(block, tmp_path)
    assert '| `convformer_tiny` |' not in out  # no v1 run of it without the change: no row, never v2's 90.00
    assert '| `convformer_tiny_late` | 85.00 +- 0.10 (2) | 84.00 +- 0.10 (2) | -1.00 |' in out
    (tmp_path / 'fmnist-cpu64-v1.json').write_text(json.dumps(v1))
    out = render_readme(block, tmp_path)
    assert '| `convformer_tiny` | 80.00 +- 0.10 (2) | 81.00 +- 0.10 (2) | +1.00 |' in out
    assert 'architecture v1' in out and 'Variant `v1`' not in out  # a kept baseline is not a design change


decimals = st.decimals(min_value=0, max_value=999, places=2, allow_nan=False).map(lambda d: f'{d:.2f}')


@given(number=decimals, suffix=st.sampled_from(['', '%', 'x', ' points']))
def test_a_number_in_prose_must_come_from_a_rendered_block_of_the_page(number, suffix):
    prose = f'The model is {number}{suffix} better.\n'
    assert unquoted_numbers(prose) == [number + suffix.strip()[:1] if suffix in ('%',) else number]
    rendered = f'{prose}<!-- BEGIN t -->\n| a | {number} |\n<!-- END t -->\n'
    assert unquoted_numbers(rendered) == []
    # code (commands, arguments, versions) and link targets are not claims
    assert unquoted_numbers(f'Run `--lr {number}` or\n```bash\nx --lr {number}\n```\n[a](v{number}.md)\n') == []


@pytest.mark.parametrize(
    'claim',
    [
        'oneDNN runs them 2.2x faster than `nn.Linear`',
        'folds into the next 1x1 conv (+2% images/s)',
        'this alone made peers up to 1.7x faster',
        'took the largest logit error from 0.18 to 0.02',
        'twice with seed 0: 91.56% and 91.17% test',
    ],
)
def test_claims_without_a_results_file_are_caught(claim):
    assert unquoted_numbers(claim + '\n')


def test_dangling_links_and_the_card_template(tmp_path):
    (tmp_path / 'there.md').write_text('x')
    doc = tmp_path / 'doc.md'
    doc.write_text('[a](there.md#s) [b](gone.md) ![c](img/none.png) [d](https://x.org/y) [e](#anchor)\n')
    assert dangling_links(doc) == ['gone.md', 'img/none.png']
    template = ROOT / 'model_cards' / 'template.md'  # a link to the card template, for readers of model_cards/
    assert template.resolve().is_file() and '{{ card_data }}' in template.read_text()


def test_command_blocks_stop_their_servers_and_push_where_they_serve():
    server = 'HZ_HUB_TOKENS=demo:hf_demo hybrid-zoo hub-server --port 8765 --data-dir d &\n'
    env = 'export HF_ENDPOINT=http://127.0.0.1:8765\n'
    fence = '```bash\n{}```\n'.format
    assert unstopped_jobs(fence(server + 'hybrid-zoo push run demo/x\n')) == [server.strip()]
    assert (
        unstopped_jobs(fence(server + 'kill %1\n'))
        == unstopped_jobs(fence('a && b\nfor i in 1; do x & done; wait\n'))
        == []
    )
    assert unserved_pushes(fence('hybrid-zoo prepare-data --push-to org/digits\n')) == [
        'pushes to org/ without a server serving org'
    ]
    assert unserved_pushes(fence(server + env + 'hybrid-zoo push run demo/x\nkill %1\n')) == []
    assert unserved_pushes(fence('hybrid-zoo push run <org>/x\n')) == []  # the reader's own namespace
    org = server.replace('&', '--org hz:demo &')
    assert unserved_pushes(fence(org + env + 'hybrid-zoo push run hz/x\nhybrid-zoo push run other/x\n')) == [
        'pushes to other/ without a server serving other'
    ]


def test_the_repository_documents_pass_every_check():
    """README.md, docs/ and docs/reports/: in sync, every number from a block, links, servers, titles, no tracker words."""
    assert check_documents(ROOT / 'README.md', RESULTS_DIR) == []
    reports = sorted((ROOT / 'docs' / 'reports').glob('*.md'))
    assert reports and all(Path(r).read_text().startswith('# Report: ') for r in reports)


def test_tracker_words_and_undated_reports_are_refused(tmp_path):
    (tmp_path / 'docs' / 'reports').mkdir(parents=True)
    (tmp_path / 'README.md').write_text('As issue 12 says, see the bench issue.\n')
    (tmp_path / 'docs' / 'reports' / 'r.md').write_text('# Report: speed\n')
    problems = check_documents(tmp_path / 'README.md', tmp_path)
    assert any("'issue 12'" in p for p in problems) and any("'the bench issue'" in p for p in problems)
    assert any('r.md: the title must end in' in p for p in problems)
    (tmp_path / 'docs' / 'reports' / 'r.md').write_text('# Report: speed (2026-12-03, architecture v2)\n')
    assert not any('r.md' in p for p in check_documents(tmp_path / 'README.md', tmp_path))


def test_v3_screen_pairs_each_arm_with_v2_seed_by_seed_and_applies_the_rule(tmp_path):
    from hybrid_zoo.benchmarks.docs import v3_screen_table

    def runs(rows):
        return {'runs': [{'model': m, 'seed': s, 'test_top1': v, 'architecture_version': a} for m, s, v, a in rows]}

    base = runs([('convformer_tiny', 0, 82.0, 2), ('convformer_tiny', 1, 81.0, 2), ('convformer_tiny', 2, 90.0, 1)])
    (tmp_path / 'fmnist-cpu64.json').write_text(json.dumps(base))  # seed 2 is a v1 run: never a v2 baseline
    worse = runs([('convformer_tiny', 0, 80.0, 2), ('convformer_tiny', 1, 79.1, 2)])  # -2.0, -1.9: SE 0.05
    (tmp_path / 'fmnist-cpu64-silu.json').write_text(json.dumps(worse))
    better = runs([('convformer_tiny', 0, 82.5, 2), ('convformer_tiny', 1, 81.3, 2), ('convformer_tiny', 2, 99.0, 2)])
    (tmp_path / 'fmnist-cpu64-bn0.json').write_text(json.dumps(better))
    (tmp_path / 'fmnist-cpu64-repdw.json').write_text(json.dumps(runs([('convformer_tiny', 0, 83.0, 2)])))
    table = v3_screen_table(tmp_path)
    rows = {line.split(' | ')[0].strip('| `'): line for line in table.splitlines() if line.startswith('| `')}
    assert 's0: 82.00 -> 82.50, s1: 81.00 -> 81.30 | +0.40 | 0.10 | passes' in rows['bn0']  # seed 2 unpaired
    assert '-1.95 | 0.05 | dropped' in rows['silu']
    assert 'pending (one seed)' in rows['repdw'] and 'not run yet' in rows['bn0_repdw_silu']


def test_v3_speed_pairs_each_arm_with_v2_round_by_round(tmp_path):
    from hybrid_zoo.benchmarks.docs import v3_speed_table

    # per round (batch 32): v2's int8 batch takes 0.4 s, the arm's 0.32 s in rounds 0-1 and 0.5 s in round 2;
    # eager is the same for both
    def raw(int8_times):
        return [
            {'round': r, 'modes': {'eager': {'t': [1.0, 1.0]}, 'int8-pt2e': {'t': [t, t]}}}
            for r, t in enumerate(int8_times)
        ]

    bench = {
        'meta': {'batch_size': 32, 'img_size': 224, 'threads': 2, 'rounds': 3, 'date': 'd', 'cpu': 'c',
                 'settings': {'modes': ['eager', 'int8-pt2e']}},
        'models': {'convformer_tiny': {}, 'convformer_tiny__silu': {}},
        'raw': {'convformer_tiny': raw([0.4, 0.4, 0.4]), 'convformer_tiny__silu': raw([0.32, 0.32, 0.5])},
    }  # fmt: skip
    (tmp_path / 'v3-silu-speed.json').write_text(json.dumps(bench))
    table = v3_speed_table(tmp_path)
    assert '| `convformer_tiny__silu` | `convformer_tiny` | 1.00x [1.00-1.00] (3) | 1.25x [0.80-1.25] (3) |' in table
    assert v3_speed_table(tmp_path / 'none') is None
