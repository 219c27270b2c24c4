"""Streamed training: shards written and read back, exact resume after kill -9, two simulated machines.

Everything is real: parquet and webdataset shards of scikit-learn's digits, ``datasets`` streaming, DataLoader
workers, the trainer's command line in subprocesses, ``accelerate launch`` across two "machines" on 127.0.0.1 (gloo,
one CPU process each) reading a dataset repo from the bundled Hub server through the real ``huggingface_hub`` client.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from safetensors.torch import load_file

from hybrid_zoo.train import data
from hybrid_zoo.train.checkpoints import verify_checkpoint
from hybrid_zoo.train.shards import shard_counts, write_shards
from hybrid_zoo.train.streaming import AUDIT_ENV
from hybrid_zoo_cli import data as data_cli

pytestmark = [pytest.mark.train]

TRAIN = [sys.executable, '-m', 'hybrid_zoo.train']
# a tiny timm model, 32 px grayscale: seconds per run
COMMON = ['--model', 'test_convnext', '--img-size', '32', '--in-chans', '1', '--batch-size', '8', '--streaming']
COMMON += ['--drop-path-rate', '0', '--lr', '2e-3', '--shuffle-buffer', '64']


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp('digits')
    dd = data.prepare_digits(root / 'digits')
    return dd, root


@pytest.mark.parametrize('fmt', ['parquet', 'webdataset'])
def test_shards_stream_back_the_same_examples_and_class_names(digits, tmp_path, fmt):
    dd, _ = digits
    folder = write_shards(dd, tmp_path / fmt, fmt=fmt, shard_size=300)
    assert shard_counts(folder) == {'train': len(dd['train']), 'test': len(dd['test'])}
    assert len(list((folder / 'data').glob('train-*'))) == 5  # ceil(1437 / 300)
    streams = load_dataset(str(folder), streaming=True)
    label = 'label' if fmt == 'parquet' else 'cls'
    assert streams['train'].features[label].names == dd['train'].features['label'].names
    got = collections.Counter(ex[label] for ex in streams['train'])
    assert got == collections.Counter(dd['train']['label'])


def test_shard_writer_refuses_labels_without_names(digits, tmp_path):
    dd, _ = digits
    plain = dd.cast_column('label', data.Value('int64'))
    with pytest.raises(ValueError, match='expected a ClassLabel column'):
        write_shards(plain, tmp_path / 'x')
    assert not (tmp_path / 'x').exists()


def test_webdataset_shards_stream_without_being_asked(digits, tmp_path):
    from hybrid_zoo.train.streaming import wants_streaming

    dd, root = digits
    wds = write_shards(dd, tmp_path / 'wds', 'webdataset', 500)
    pq = write_shards(dd, tmp_path / 'pq', 'parquet', 500)
    assert wants_streaming(str(wds)) and wants_streaming(str(wds / 'data' / '*.tar'))
    assert not wants_streaming(str(pq)) and not wants_streaming(str(root / 'digits')) and not wants_streaming('default')


def test_a_saved_dataset_streams_with_its_size_and_a_disjoint_carve(digits):
    from hybrid_zoo.train.streaming import example_hash, open_stream, samples_per_epoch

    _, root = digits
    stream = open_stream(str(root / 'digits'), max_val_samples=50, seed=3)
    assert stream.train_examples == 1437 and samples_per_epoch(stream, None, 0.1) == 1293
    assert samples_per_epoch(stream, 200, 0.1) == 200
    val = {
        example_hash({'bytes': r['image']['bytes']}, r['label'], 3)
        for r in stream.val.dataset.cast_column('image', data.HFImage(decode=False))
    }
    train = {example_hash(ex['image'], ex['label'], 3) for ex in stream.train}
    assert len(val) == 50 and not val & train and 1000 < len(train) < 1437


def _run(args, env=None, **kw):
    return subprocess.run(args, env=env or _env(), capture_output=True, text=True, **kw)


def _env(**extra) -> dict:
    return dict(os.environ, OMP_NUM_THREADS='1', **extra)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / 'model' / 'model.safetensors')


def test_killed_stream_resumes_to_the_same_weights(digits, tmp_path):
    dd, _ = digits
    shards = write_shards(dd, tmp_path / 'shards', 'webdataset', 150)
    args = TRAIN + COMMON + ['--dataset', str(shards), '--epochs', '2', '--samples-per-epoch', '320']
    args += ['--workers', '2', '--checkpoint-every', '3', '--max-val-samples', '64']

    ref = _run(args + ['--output-dir', str(tmp_path / 'ref')])
    assert ref.returncode == 0, ref.stderr[-3000:]

    out = tmp_path / 'cut'
    proc = subprocess.Popen(args + ['--output-dir', str(out)], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    meta = out / 'checkpoints' / 'last' / 'meta.json'
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # kill -9 inside epoch 2, after a mid-epoch save
        try:  # the trainer swaps the whole checkpoint folder at each save: 'last' is briefly absent
            m = json.loads(meta.read_text())
        except FileNotFoundError:
            m = {}
        if m.get('position') and m['position']['epoch'] == 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    cut_at = json.loads(meta.read_text())
    assert cut_at['position']['steps'] > 0 and not (out / 'model').exists()

    resumed = _run(args + ['--output-dir', str(out), '--resume', 'auto'])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed from' in resumed.stderr
    a, b = _weights(tmp_path / 'ref'), _weights(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), 'a resumed stream must end with the same weights'
    hist_ref = (tmp_path / 'ref' / 'metrics.jsonl').read_text().splitlines()
    hist_cut = (out / 'metrics.jsonl').read_text().splitlines()
    strip = ('images_per_s', 'time')
    assert [{k: v for k, v in json.loads(x).items() if k not in strip} for x in hist_ref] == [
        {k: v for k, v in json.loads(x).items() if k not in strip} for x in hist_cut
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, deepest first (torch's elastic agent starts the training processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out[::-1]


def _machines(port: int, rank: int, train_args: list[str]) -> list[str]:
    launch = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_machines', '2']
    launch += ['--num_processes', '2', '--machine_rank', str(rank), '--main_process_ip', '127.0.0.1']
    launch += ['--main_process_port', str(port), '--mixed_precision', 'no', '--dynamo_backend', 'no']
    return launch + train_args


@pytest.fixture
def hub_digits(digits, hub_server, hf_token, tmp_path, monkeypatch):
    """The digits as webdataset shards in the dataset repo alice/digits-wds of the local Hub server."""
    _, root = digits
    monkeypatch.setenv('HF_HOME', str(tmp_path / 'hf-home'))
    rc = data_cli.main(['--out-dir', str(tmp_path / 'prep'), '--shards', 'webdataset', '--shard-size', '180',
                    '--source', str(root / 'digits'), '--push-to', 'alice/digits-wds'])  # fmt: skip
    assert rc == 0
    return 'alice/digits-wds'


@pytest.mark.hub
@pytest.mark.slow
def test_two_machines_read_disjoint_shards_and_match_one_process(hub_digits, tmp_path):
    args = ['-m', 'hybrid_zoo.train', *COMMON, '--dataset', hub_digits, '--epochs', '2']
    args += ['--samples-per-epoch', '256', '--workers', '1', '--max-val-samples', '64', '--mixed-precision', 'no']
    env = _env(ACCELERATE_USE_CPU='1', HF_HUB_DISABLE_XET='1')

    port, multi, audit2 = _free_port(), tmp_path / 'two', tmp_path / 'audit-two'
    audit2.mkdir()
    menv = dict(env, **{AUDIT_ENV: str(audit2)})
    procs = [
        subprocess.Popen(
            _machines(port, r, args + ['--output-dir', str(multi)]),
            env=menv,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for r in (0, 1)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-3000:] + outs[1][1][-3000:]

    audit1 = tmp_path / 'audit-one'
    audit1.mkdir()
    one = _run([sys.executable, *args, '--grad-accum-steps', '2', '--output-dir', str(tmp_path / 'one')],
               env=dict(env, **{AUDIT_ENV: str(audit1)}))  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]

    for epoch in (0, 1):
        slots = [(audit2 / f'e{epoch}-slot{k}-w0.txt').read_text().split('\n') for k in (0, 1)]
        seen = [{line.split()[1] for line in s if line} for s in slots]
        assert seen[0] and seen[1] and not seen[0] & seen[1], 'the two machines must read disjoint data'
        for k in (0, 1):  # one process with 2 accumulation steps reads the same slots, in the same order
            assert (audit1 / f'e{epoch}-slot{k}-w0.txt').read_text() == (
                audit2 / f'e{epoch}-slot{k}-w0.txt'
            ).read_text()
    a, b = _weights(multi), _weights(tmp_path / 'one')
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f'{k} differs between 2 machines and 1')
    results = json.loads((multi / 'model' / 'results.json').read_text())
    assert results['world_size'] == 2 and results['global_batch_size'] == 16


@pytest.mark.hub
@pytest.mark.slow
def test_a_killed_machine_fails_the_run_loudly_and_keeps_the_checkpoint(hub_digits, tmp_path):
    args = ['-m', 'hybrid_zoo.train', *COMMON, '--dataset', hub_digits, '--epochs', '3']
    args += ['--samples-per-epoch', '512', '--workers', '1', '--max-val-samples', '64', '--checkpoint-every', '4']
    out = tmp_path / 'run'
    env = _env(ACCELERATE_USE_CPU='1', HF_HUB_DISABLE_XET='1')
    port = _free_port()
    procs = [
        subprocess.Popen(
            _machines(port, r, args + ['--output-dir', str(out)]),
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        for r in (0, 1)
    ]
    meta = out / 'checkpoints' / 'last' / 'meta.json'
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not meta.is_file() and procs[0].poll() is None:
        time.sleep(0.05)
    assert meta.is_file(), 'no checkpoint was written'
    for pid in _descendants(procs[1].pid):  # machine 1 dies: its training process first, then its launcher
        os.kill(pid, signal.SIGKILL)
    procs[1].kill()
    procs[1].wait()
    _, err = procs[0].communicate(timeout=300)
    assert procs[0].returncode != 0, 'the surviving machine must fail, not hang or report success'
    assert not (out / 'model').exists()
    verify_checkpoint(out / 'checkpoints' / 'last')  # intact: its manifest matches every file
