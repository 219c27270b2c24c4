"""The benchmark tool: a real two-model run through the worker subprocesses, the row and target logic, the CLIs.

Timings here are smoke-sized (64 px, batch 2, one round, one timed iteration): they check the plumbing,
never the numbers.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import timm

from hybrid_zoo import MODEL_NAMES
from hybrid_zoo.benchmarks import speed as bench
from hybrid_zoo.benchmarks import speed_report as bench_report
from hybrid_zoo.benchmarks.speed_report import REFERENCE, TARGETS, Target, evaluate_targets, summarise
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo_cli import bench as bench_cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ['--batch-size', '2', '--img-size', '64', '--rounds', '1', '--warmup', '1', '--iters', '1']
TINY += ['--latency-warmup', '1', '--latency-iters', '1', '--train-batch-size', '2', '--train-iters', '1', '-q']


@pytest.fixture(scope='module')
def smoke(tmp_path_factory) -> tuple[int, Path, dict]:
    out = tmp_path_factory.mktemp('bench')
    argv = ['--models', 'convformer_tiny', 'test_convnext', *TINY, '--out-dir', str(out)]
    argv += ['--reference-batch', '1', '--reference-mm-size', '256', '--reference-iters', '1']
    rc = bench_cli.main(argv)
    return rc, out, json.loads((out / 'bench-cpu.json').read_text())


def test_smoke_run_writes_every_output(smoke):
    rc, out, doc = smoke
    assert rc == 0
    assert doc['schema'] == 'hybrid_zoo.bench/1'
    meta = doc['meta']
    for key in ('date', 'cpu', 'device', 'threads', 'torch', 'timm', 'dtype', 'allocator', 'settings', 'software'):
        assert meta[key], key
    assert meta['run']['complete'] and 'hybrid-zoo bench --models convformer_tiny' in meta['run']['command']
    assert meta['settings']['batch_size'] == 2 and meta['settings']['img_size'] == 64
    # the allocator setting reached the workers' environment at spawn
    assert all(meta['worker_env'][k] == v for k, v in bench.MALLOC_NO_TRIM.items())
    assert all(r['env']['MALLOC_TRIM_THRESHOLD_'] == '17179869184' for rs in doc['raw'].values() for r in rs)
    assert doc['reference']['onednn_gflops'] > 0 and doc['reference']['mm_gflops'] > 0

    assert list(doc['models']) == ['convformer_tiny', 'test_convnext']
    for name, row in doc['models'].items():
        assert row['error'] is None, name
        for key in ('infer_img_s', 'infer_img_s_nchw', 'infer_img_s_channels_last', 'latency_ms', 'train_img_s'):
            assert row[key] > 0, (name, key)
        assert row['infer_layout'] in bench.LAYOUTS and row['channels_last_speedup'] > 0
        assert row['peak_mem_infer_gb'] > 0.1 and row['peak_mem_train_gb'] >= row['peak_mem_infer_gb']
        # rounded to significant digits: positive however slow a busy machine makes the 0.005-GMAC model
        assert row['gflops'] > 0 and row['pct_onednn'] > 0 and row['rounds_measured'] == 1
    ours, peer = doc['models']['convformer_tiny'], doc['models']['test_convnext']
    assert ours['ours'] and ours['size'] == 'tiny' and ours['reparameterized'] is True
    assert not peer['ours'] and peer['size'] is None
    assert [t['label'] for t in doc['targets']] == ['convformer_tiny GFLOP/s >= 80% of oneDNN 1x1']

    with open(out / 'bench-cpu.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['model'] for r in rows] == ['convformer_tiny', 'test_convnext'] and 'infer_img_s' in rows[0]
    md = (out / 'bench-cpu.md').read_text()
    assert '| **convformer_tiny** |' in md and '| test_convnext |' in md and 'MALLOC_MMAP_THRESHOLD_' in md
    assert (out / 'bench-cpu.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_gmacs_and_params_come_from_hybrid_zoo_flops(smoke):
    _, _, doc = smoke
    model = timm.create_model('convformer_tiny')
    macs = count_macs(model, (3, 64, 64))
    row = doc['models']['convformer_tiny']
    assert row['gmacs'] == pytest.approx(macs.gmacs, abs=1e-4)
    assert row['attention_gmacs'] == pytest.approx(macs.attention_gmacs, abs=1e-4) and row['attention_gmacs'] > 0
    assert row['params_m'] == pytest.approx(count_params(model) / 1e6, abs=1e-3)


def test_report_only_rerenders_with_top1(smoke, tmp_path):
    _, out, measured = smoke
    top1 = tmp_path / 'top1.csv'
    top1.write_text('model,top1\ntest_convnext.a_tag,70.5\ntest_convnext.b_tag,71.25\nconvformer_tiny,75\n')
    rc = bench_cli.main(
        ['--report-only', str(out / 'bench-cpu.json'), '--top1-csv', str(top1), '--out-dir', str(tmp_path)]
    )
    assert rc == 0
    doc = json.loads((tmp_path / 'bench-cpu.json').read_text())
    assert doc['models']['test_convnext']['top1'] == 71.25 and doc['models']['convformer_tiny']['top1'] == 75
    assert '| top-1 |' in (tmp_path / 'bench-cpu.md').read_text()
    assert (tmp_path / 'bench-cpu.png').stat().st_size > 0
    # re-summarised from the raw samples under the same rules: the same rows, targets and run record
    for name, row in measured['models'].items():
        assert {k: v for k, v in doc['models'][name].items() if k != 'top1'} == row
    assert doc['targets'] == measured['targets'] and doc['meta']['run'] == measured['meta']['run']
    assert doc['raw'] == measured['raw']


def _worker_result(round_: int, nchw: list[float], cl: list[float], train: list[float], **extra) -> dict:
    return {
        'round': round_,
        'infer': {'nchw': {'t': nchw, 'busy': [0.0] * len(nchw)}, 'channels_last': {'t': cl, 'busy': [0.5] * len(cl)}},
        'latency': {'t': [0.05, 0.04], 'layout': 'channels_last'},
        'train': {'t': train, 'busy': [None] * len(train)},
        'peak_mem_infer_gb': 1.0 + round_,
        'peak_mem_train_gb': 2.0,
        **extra,
    }


def test_summarise_turns_samples_into_rows():
    settings = asdict(bench.BenchConfig(batch_size=32, train_batch_size=16, rounds=2, threads=2))
    info = {'params': 2_000_000, 'gmacs': 4.0, 'attention_gmacs': 0.5, 'gmacs_run': 3.0, 'reparameterized': True}
    raw = {
        REFERENCE: [
            {'round': r, 'reference': {'conv': {'flop': 400e9, 't': [1.0]}, 'mm': {'flop': 200e9, 't': [1.0]}}}
            for r in (0, 1)
        ],
        'm': [_worker_result(0, [1.0, 1.0], [0.5, 0.5], [2.0], info=info), _worker_result(1, [2.0], [1.0], [1.0])],
    }
    doc = summarise(raw, settings, {'device': 'x'}, {'m': {'size': 'small', 'ours': True}})
    row = doc['models']['m']
    assert row['size'] == 'small' and row['ours'] and row['params_m'] == 2.0 and row['gmacs'] == 4.0
    assert row['infer_layout'] == 'channels_last'
    assert (row['infer_img_s'], row['infer_img_s_min'], row['infer_img_s_max']) == (64.0, 32.0, 64.0)
    assert row['infer_img_s_nchw'] == 32.0 and row['channels_last_speedup'] == 2.0
    assert (row['train_img_s_min'], row['train_img_s_max']) == (8.0, 16.0)
    assert row['latency_ms'] == 45.0 and row['latency_ms_min'] == 40.0
    assert row['gflops'] == 2 * 3.0 * 64.0  # MACs of the graph that ran, not as built
    assert row['pct_onednn'] == pytest.approx(100 * 384 / 400) and row['pct_mm'] == pytest.approx(100 * 384 / 200)
    assert row['peak_mem_infer_gb'] == 2.0 and row['rounds_measured'] == 2
    assert row['contended_samples'] == 3  # the channels_last samples at 50% busy
    assert doc['rounds']['m']['infer_img_s'] == [64.0, 32.0] and doc['rounds'][REFERENCE]['onednn_gflops'] == [400, 400]
    assert doc['reference']['onednn_gflops'] == 400.0 and doc['reference']['mm_gflops'] == 200.0


def test_summarise_keeps_a_slow_tiny_model_rate_positive():
    # 0.005 GMACs at 2 img/s is 0.02 GFLOP/s: rounding to a fixed number of decimals used to make it 0.0
    settings = asdict(bench.BenchConfig(batch_size=2, train_batch_size=2, rounds=1, threads=2))
    info = {'params': 20_000, 'gmacs': 0.005, 'attention_gmacs': 0.0, 'reparameterized': True}
    raw = {
        REFERENCE: [
            {'round': 0, 'reference': {'conv': {'flop': 400e9, 't': [1.0]}, 'mm': {'flop': 200e9, 't': [1.0]}}}
        ],
        'm': [_worker_result(0, [1.0], [1.0], [1.0], info=info)],
    }
    row = summarise(raw, settings, {'device': 'x'}, {'m': {'size': 'tiny', 'ours': True}})['models']['m']
    assert row['gflops'] == pytest.approx(2 * 0.005 * 2.0) and row['pct_onednn'] == pytest.approx(100 * 0.02 / 400)


def test_targets_pass_fail_and_ranges_on_synthetic_rows():
    models = {
        'convformer_small': {'infer_img_s': 40.0, 'train_img_s': 10.0, 'pct_onednn': 85.0},
        'coatnet_0_rw_224': {'infer_img_s': 30.0, 'train_img_s': 8.0},
        'convnext_tiny': {'infer_img_s': 20.0, 'train_img_s': None},
        'convformer_tiny_late': {'infer_img_s': 50.0, 'pct_onednn': 70.0},  # no baseline of its size measured
    }
    rounds = {
        'convformer_small': {'infer_img_s': [39.0, 42.0], 'train_img_s': [10.0, 10.0], 'gflops': [340.0, 360.0]},
        'coatnet_0_rw_224': {'infer_img_s': [30.0, 30.0], 'train_img_s': [8.0, 8.0]},
        REFERENCE: {'onednn_gflops': [400.0, 400.0]},
    }
    results = {t['label']: t for t in evaluate_targets(models, {'onednn_gflops': 400.0}, rounds)}
    assert set(results) == {
        'convformer_small img/s >= 1.25x coatnet_0_rw_224',
        'convformer_small img/s >= 1.6x convnext_tiny',
        'convformer_small GFLOP/s >= 80% of oneDNN 1x1',
        'convformer_small train img/s >= 1.3x coatnet_0_rw_224',
        'convformer_tiny_late GFLOP/s >= 90% of oneDNN 1x1',
    }
    coat = results['convformer_small img/s >= 1.25x coatnet_0_rw_224']
    # the median of the per-round paired ratios (1.3 and 1.4), not the ratio of the rows' medians (40 / 30)
    assert coat['passed'] and coat['measured'] == pytest.approx(1.35, abs=1e-3)
    assert (coat['low'], coat['high']) == (1.3, 1.4)
    assert results['convformer_small img/s >= 1.6x convnext_tiny']['passed']
    assert results['convformer_small img/s >= 1.6x convnext_tiny']['low'] is None  # no per-round values
    assert not results['convformer_small train img/s >= 1.3x coatnet_0_rw_224']['passed']  # 1.25x
    gflops = results['convformer_small GFLOP/s >= 80% of oneDNN 1x1']
    assert gflops['passed'] and (gflops['low'], gflops['measured'], gflops['high']) == (85.0, 87.5, 90.0)
    assert not results['convformer_tiny_late GFLOP/s >= 90% of oneDNN 1x1']['passed']
    lines = bench_report.target_lines(list(results.values()))
    assert 'PASS convformer_small img/s >= 1.25x coatnet_0_rw_224: 1.35x [1.3-1.4]' in lines
    # pooled medians can put the ratio outside every round's (noisy, bimodal samples); the verdict cannot
    skewed = {'convformer_tiny': {'train_img_s': 11.0}, 'coatnet_nano_rw_224': {'train_img_s': 8.0}}
    skewed_rounds = {
        'convformer_tiny': {'train_img_s': [10.0, 12.0]},
        'coatnet_nano_rw_224': {'train_img_s': [8.0, 10.0]},
    }
    (t,) = evaluate_targets(
        skewed, {}, skewed_rounds, [Target('convformer_tiny', 'train_img_s', 1.3, 'coatnet_nano_rw_224')]
    )
    assert (t['low'], t['measured'], t['high'], t['passed']) == (1.2, 1.225, 1.25, False)  # 11 / 8 would pass
    assert 'FAIL convformer_tiny_late GFLOP/s >= 90% of oneDNN 1x1: 70.0%' in lines
    custom = evaluate_targets(models, {}, None, [Target('convnext_tiny', 'infer_img_s', 0.7, 'coatnet_0_rw_224')])
    assert not custom[0]['passed'] and custom[0]['measured'] == pytest.approx(0.667, abs=1e-3)


def test_performance_targets_name_our_models_and_built_in_peers():
    peers = {p for ps in bench.PEER_SETS.values() for p in ps}
    assert len(TARGETS) == 13 + 3 + 6 + 9
    assert all(t.model in MODEL_NAMES and (t.baseline is None or t.baseline in peers) for t in TARGETS)


def test_resolve_models():
    assert bench.resolve_models() == list(MODEL_NAMES)
    assert bench.resolve_models(['test_convnext']) == ['test_convnext']
    assert bench.resolve_models(['test_convnext'], family=True) == [*MODEL_NAMES, 'test_convnext']
    everything = bench.resolve_models(peers=['all', 'small'])
    assert len(everything) == 9 + 5 + 7 + 4 == len(set(everything))
    assert bench.size_class('coatnet_1_rw_224') == 'base' and bench.size_class('convformer_small_late') == 'small'
    with pytest.raises(ValueError, match='unknown peer set'):
        bench.resolve_models(peers=['huge'])


def test_worker_env_sets_or_clears_the_allocator(monkeypatch):
    monkeypatch.setenv('MALLOC_TRIM_THRESHOLD_', '123')
    env = bench.worker_env(bench.BenchConfig(threads=3))
    assert env['MALLOC_TRIM_THRESHOLD_'] == env['MALLOC_MMAP_THRESHOLD_'] == '17179869184'
    assert env['OMP_NUM_THREADS'] == env['MKL_NUM_THREADS'] == '3'
    env = bench.worker_env(bench.BenchConfig(threads=3, malloc_tuning=False))
    assert 'MALLOC_TRIM_THRESHOLD_' not in env and 'MALLOC_MMAP_THRESHOLD_' not in env


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match='layouts'):
        bench.BenchConfig(layouts=('nhwc',))
    with pytest.raises(ValueError, match='iters'):
        bench.BenchConfig(iters=0)


def _gpu_tool():
    spec = importlib.util.spec_from_file_location('gpu_bench', ROOT / 'tools' / 'gpu_bench.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('entry', ['bench', 'cli', 'gpu'])
def test_help_exits_zero(entry, capsys):
    import hybrid_zoo_cli as cli

    run = {'bench': bench_cli.main, 'cli': lambda a: cli.main(['bench', *a]), 'gpu': lambda a: _gpu_tool().main(a)}[
        entry
    ]
    with pytest.raises(SystemExit) as exc:
        run(['--help'])
    assert exc.value.code == 0
    assert '--no-malloc-tuning' in capsys.readouterr().out


def test_gpu_script_smoke_runs_on_cpu(tmp_path, monkeypatch):
    monkeypatch.delenv('OUT', raising=False)
    argv = ['--device', 'cpu', '--batch-size', '2', '--img-size', '64', '--models', 'test_convnext', '--no-compile']
    argv += ['--no-reference', '--warmup', '1', '--iters', '1', '--latency-warmup', '1', '--latency-iters', '1']
    assert _gpu_tool().main([*argv, '--out-dir', str(tmp_path), '-q']) == 0
    doc = json.loads((tmp_path / 'bench-gpu.json').read_text())
    assert doc['meta']['dtype'] == 'amp bf16' and doc['meta']['settings']['jobs'] == 4
    row = doc['models']['test_convnext']
    assert row['infer_img_s'] > 0 and row['train_img_s'] is None and row['error'] is None
    assert {p.suffix for p in tmp_path.iterdir()} >= {'.json', '.csv', '.md', '.png'}


def test_time_budget_drops_compilation_first_then_models():
    budget = bench._Budget(100.0, start=bench.time.monotonic())
    task = {'name': 'm', 'round': 0, 'compile': True}
    assert budget.admit(task) == task  # 100 s left: a compiled run (first guess 90 s) fits
    budget.record(task, 120.0)
    budget.record({'compile': False}, 30.0)
    assert budget.admit(task) == dict(task, compile=False, compile_skipped='time budget')
    budget.deadline = bench.time.monotonic() + 10.0
    assert budget.admit(task) is None and budget.skipped == ['m round 1: time budget']
    assert bench._Budget(None, 0.0).admit(task) == task


CRASHY = '''
import os
import signal

import torch
from timm.models import register_model
from torch import nn


class Crashy(nn.Module):
    """Dies like torch 2.14's oneDNN fault: a native signal in a channels_last training forward."""

    def __init__(self, num_classes=1000, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=4)
        self.head = nn.Linear(8, num_classes)
        self.pretrained_cfg = {}

    def forward(self, x):
        if self.training and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            os.kill(os.getpid(), signal.SIGSEGV)
        return self.head(self.conv(x).mean((2, 3)))


@register_model
def hz_test_crashy(pretrained=False, **kwargs):
    return Crashy(**kwargs)
'''


def test_native_crash_in_channels_last_training_is_retried_in_nchw(tmp_path, monkeypatch):
    (tmp_path / 'hz_crashy.py').write_text(CRASHY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))  # the workers import it too
    argv = ['--models', 'hz_test_crashy', *TINY, '--no-reference', '--import', 'hz_crashy', '--out-dir', str(tmp_path)]
    assert bench_cli.main(argv) == 0
    doc = json.loads((tmp_path / 'bench-cpu.json').read_text())
    row = doc['models']['hz_test_crashy']
    assert row['error'] is None and row['infer_img_s'] > 0 and row['train_img_s'] > 0
    assert row['train_layout'] == 'nchw' and 'SIGSEGV' in row['train_fallback']
    assert doc['meta']['run']['complete'] and not doc['meta']['run']['failed']
    md = (tmp_path / 'bench-cpu.md').read_text()
    assert '(NCHW)' in md and 'killed the worker (SIGSEGV); trained in NCHW' in md


def test_a_crash_outside_training_is_not_retried():
    task = {'config': {'train': True, 'train_layout': 'channels_last'}, 'compile': False}
    inferred = {'infer': {'x': 1}, 'phase_s': {'build': 1.0, 'infer': 2.0}}
    assert bench._crashed_in_training(inferred, -11, False, task)
    assert not bench._crashed_in_training({}, -11, False, task)  # died before inference was recorded
    assert not bench._crashed_in_training(inferred, 1, False, task)  # a Python error: reported
    assert not bench._crashed_in_training(inferred, -9, True, task)  # killed on the deadline
    assert not bench._crashed_in_training(inferred, -11, False, dict(task, train_only=True))
    assert not bench._crashed_in_training(inferred, -11, False, dict(task, compile=True))  # died compiling
    compiled = dict(inferred, phase_s={'build': 1.0, 'infer': 2.0, 'compile': 30.0})
    assert bench._crashed_in_training(compiled, -6, False, dict(task, compile=True))
    assert bench._signal_name(-11) == 'SIGSEGV' and bench._signal_name(-200) == 'status -200'


def test_deployment_modes_are_columns_checked_against_eager(tmp_path):
    """--modes: each mode timed in the same worker as eager, with its parity, build time, table and plot."""
    argv = ['--models', 'test_convnext', *TINY, '--out-dir', str(tmp_path), '--no-train', '--no-latency']
    argv += ['--no-reference', '--modes', 'compiled', 'onnxruntime', 'int8', '--name', 'modes']
    assert bench_cli.main(argv) == 0
    doc = json.loads((tmp_path / 'modes.json').read_text())
    modes = doc['models']['test_convnext']['modes']
    assert list(modes) == ['eager', 'compiled', 'onnxruntime', 'int8']
    for mode in ('compiled', 'onnxruntime', 'int8'):
        assert modes[mode]['img_s'] > 0 and modes[mode]['vs_eager'] > 0 and modes[mode]['build_s'] >= 0
        assert modes[mode]['max_abs_diff'] < (0.1 if mode == 'int8' else 1e-3), (mode, modes[mode])
    assert modes['int8']['file_mb'] < modes['onnxruntime']['file_mb']
    from importlib.metadata import version

    assert doc['meta']['software']['runtimes']['onnxruntime'] == version('onnxruntime')
    md = (tmp_path / 'modes.md').read_text()
    assert 'Deployment modes:' in md and 'int8 img/s' in md
    assert (tmp_path / 'modes-modes.png').read_bytes()[:4] == b'\x89PNG'


def test_the_docs_show_a_modes_run_without_its_one_round_target_checks():
    from hybrid_zoo.benchmarks.results import RESULTS_DIR

    doc = json.loads((RESULTS_DIR / 'deploy-tiny.json').read_text())
    assert doc['targets'] and '| target |' in bench_report.render_markdown(doc)  # the whole output has them
    only = bench_report.render_modes_only(doc)
    assert only.startswith(bench_report.settings_line(doc['meta'], doc.get('reference') or {}))
    assert 'int8-pt2e img/s' in only and '| target |' not in only and 'GMACs (attn)' not in only
    failed = {**doc, 'models': {**doc['models'], 'some_peer': {'error': 'worker exited with status -9'}}}
    assert bench_report.render_modes_only(failed).endswith('- some_peer: worker exited with status -9')
    no_modes = {**doc, 'models': {n: {k: v for k, v in r.items() if k != 'modes'} for n, r in doc['models'].items()}}
    assert bench_report.render_modes_only(no_modes) is None
