"""README blocks are generated from result files, idempotently; stale blocks are detected."""

from __future__ import annotations

import json

from hybrid_zoo.benchmarks.docs import render_readme
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
    assert '| `convformer_tiny` | 80.00 +- 0.50 (2) | 82.50 +- 0.30 (2) | +2.50 | - |' in out
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
