"""The real command line under ``accelerate launch``: 2 CPU processes (gloo) train, stop, and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hybrid_zoo.train import data

pytestmark = [pytest.mark.train, pytest.mark.slow]


def test_accelerate_launch_two_cpu_processes_train_and_resume(tmp_path):
    data.prepare_digits(tmp_path / 'digits')
    out = tmp_path / 'run'
    # --cpu would silently run ONE process; --multi_gpu with ACCELERATE_USE_CPU=1 gives 2 gloo processes
    launch = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2']
    launch += ['--num_machines', '1', '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '0']
    args = ['-m', 'hybrid_zoo.train', '--model', 'test_convnext', '--dataset', str(tmp_path / 'digits')]
    args += ['--img-size', '32', '--in-chans', '1', '--epochs', '2', '--batch-size', '8', '--max-train-samples', '64']
    args += ['--max-val-samples', '64', '--workers', '1', '--output-dir', str(out), '--ema']
    env = dict(os.environ, ACCELERATE_USE_CPU='1', OMP_NUM_THREADS='1')

    first = subprocess.run(launch + args + ['--stop-after-epoch', '1'], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    meta = json.loads((out / 'checkpoints' / 'last' / 'meta.json').read_text())
    assert meta['world_size'] == 2 and meta['epoch'] == 1 and meta['num_updates'] == 4
    assert not (out / 'model').exists()

    second = subprocess.run(launch + args + ['--resume', 'auto'], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'resumed from' in second.stderr
    summary = json.loads(second.stdout.strip().splitlines()[-1])  # printed by rank 0 only
    assert summary['epochs_done'] == 2 and summary['model_dir'] == str(out / 'model')
    results = json.loads((out / 'model' / 'results.json').read_text())
    assert results['world_size'] == 2 and results['global_batch_size'] == 16 and results['num_updates'] == 8
    assert [json.loads(line)['epoch'] for line in (out / 'metrics.jsonl').read_text().splitlines()] == [1, 2]
