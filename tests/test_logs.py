"""What the commands print: progress as plain lines in a file and a bar on a terminal, no library chatter by default,
``-q`` and ``-v``, and a bench that shows measurements, not the project's targets.

Each command runs with the loggers of a fresh process (``_fresh_logging``): pytest's own handlers on the root logger
would otherwise hide what a command's logging setup prints (``logging.basicConfig`` does nothing when the root logger
has handlers).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_zoo import logs

ROOT = Path(__file__).resolve().parents[1]
PROGRESS_LINE = re.compile(r'INFO hybrid_zoo\.progress: ')
BARS_ENV = ('HF_DATASETS_DISABLE_PROGRESS_BARS', 'HF_HUB_DISABLE_PROGRESS_BARS')


@contextlib.contextmanager
def _fresh_logging():
    """The loggers as a new process has them (root: no handlers, WARNING; the libraries' unset); all restored after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {name: logging.getLogger(name).level for name in logs.LIBRARY_LOGGERS}
    state, env = dict(logs._state), {k: os.environ.get(k) for k in BARS_ENV}
    root.handlers[:] = []
    root.setLevel(logging.WARNING)
    for name in libraries:
        logging.getLogger(name).setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lib_level in libraries.items():
            logging.getLogger(name).setLevel(lib_level)
        logs._state.update(state)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# ----------------------------------------------------------------------------------------------------------------------
# The progress helper


@given(
    st.lists(
        st.tuples(st.sampled_from(['update', 'describe', 'postfix', 'nested']), st.integers(1, 5)),
        min_size=1,
        max_size=30,
    )
)
def test_progress_into_a_file_is_whole_lines_whatever_the_bars_do(ops):
    """Any mix of updates, new descriptions, postfixes and nested bars gives whole log lines: no carriage return, no
    cursor move, each line with its count, rate and time left."""
    stream = io.StringIO()
    old_stderr, old_interval = sys.stderr, logs.LINE_INTERVAL
    sys.stderr, logs.LINE_INTERVAL = stream, 0.0
    try:
        with _fresh_logging():
            logs.setup_logging(logs.NORMAL, rank0=True)
            total = sum(n for op, n in ops if op == 'update') or None
            bar = logs.progress(total=total, desc='epoch 1/1', unit='img')
            for op, n in ops:
                if op == 'update':
                    bar.update(n)
                elif op == 'describe':
                    bar.set_description(f'epoch {n}/5')
                elif op == 'postfix':
                    bar.set_postfix(loss=f'{n / 3:.3f}')
                else:
                    for _ in logs.progress(range(n), desc='eval', unit='batch', leave=False):
                        pass
            bar.close()
    finally:
        sys.stderr, logs.LINE_INTERVAL = old_stderr, old_interval
    text = stream.getvalue()
    assert '\r' not in text and '\x1b' not in text
    lines = text.splitlines()
    assert all(PROGRESS_LINE.search(line) for line in lines)
    if bar.total:  # the last state of a bar that moved: its count, time taken and left, and rate
        assert re.search(r'\d+/\d+ \[[\d:]+<[\d:]+, [\d.]+(img|batch)/s', lines[-1]), lines[-1]


def test_progress_on_a_terminal_is_a_bar_and_quiet_shows_none(monkeypatch):
    with _fresh_logging():
        terminal = _Terminal()
        monkeypatch.setattr(sys, 'stderr', terminal)
        logs.setup_logging(logs.NORMAL)
        for _ in logs.progress(range(3), desc='bench', unit='run', mininterval=0):
            pass
        assert '\r' in terminal.getvalue() and 'bench: 100%' in terminal.getvalue()  # tqdm's own bar

        quiet = _Terminal()
        monkeypatch.setattr(sys, 'stderr', quiet)
        logs.setup_logging(logs.QUIET)
        for _ in logs.progress(range(3), desc='bench', unit='run'):
            pass
        logging.getLogger('hybrid_zoo.anything').info('not shown')
        logging.getLogger('hybrid_zoo.anything').warning('shown')
        assert quiet.getvalue().endswith('shown\n') and 'bench' not in quiet.getvalue()


def test_every_progress_in_the_package_goes_through_the_helper():
    """A direct tqdm bar would write carriage returns into a log file again."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / 'hybrid_zoo').rglob('*.py'))
        if p.name != 'logs.py' and re.search(r'^\s*(from tqdm|import tqdm)', p.read_text(), re.M)
    ]
    assert offenders == []


# ----------------------------------------------------------------------------------------------------------------------
# Commands


@pytest.mark.export
def test_onnx_export_prints_no_exporter_chatter(tmp_path, capfd):
    """onnx_ir logs one 'Replaced initializer' line per de-duplicated weight, the exporter its steps on stdout."""
    pytest.importorskip('onnxscript')
    from hybrid_zoo_cli import export as export_cli

    with _fresh_logging():
        rc = export_cli.main(['--model', 'test_convnext', '--img-size', '32', '--output', str(tmp_path / 'm.onnx')])
    out, err = capfd.readouterr()
    assert rc == 0
    assert 'Replaced initializer' not in err and 'unused' not in err and 'rewrite rules' not in err
    assert '[torch.onnx]' not in out and json.loads(out.strip())['max_abs_diff_vs_eager'] < 1e-4  # stdout: the result


@pytest.mark.bench
def test_bench_shows_measurements_not_the_project_targets(tmp_path, capsys):
    pytest.importorskip('matplotlib')
    from hybrid_zoo_cli import bench as bench_cli

    committed = ROOT / 'model_cards' / 'results' / 'bench-cpu.json'
    assert json.loads(committed.read_text())['targets']  # the results file keeps them
    with _fresh_logging():
        assert bench_cli.main(['--report-only', str(committed), '--out-dir', str(tmp_path), '-q']) == 0
    out = capsys.readouterr().out
    assert not re.search(r'\b(PASS|FAIL|pass|fail|target)', out, re.I), out
    assert '| **convformer_tiny** |' in out and 'img/s' in out  # the measurements
    assert json.loads((tmp_path / 'bench-cpu.json').read_text())['targets']


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    pytest.importorskip('datasets')
    from hybrid_zoo.train import data

    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


def _train(tmp_path, digits, capfd, *flags) -> tuple[str, str]:
    """A tiny training run of ``hybrid-zoo train`` (2 epochs, a checkpoint each) into a file-like stderr."""
    from hybrid_zoo_cli import train as train_cli

    argv = ['--model', 'test_convnext', '--dataset', str(digits), '--img-size', '32', '--in-chans', '1']
    argv += ['--epochs', '2', '--batch-size', '16', '--max-train-samples', '64', '--max-val-samples', '32']
    argv += ['--workers', '0', '--output-dir', str(tmp_path / 'run'), *flags]
    with _fresh_logging():
        assert train_cli.main(argv) == 0
    return capfd.readouterr()


@pytest.mark.train
def test_training_log_in_a_file_is_readable(tmp_path, digits, capfd):
    """Progress as whole lines with rate and ETA, at most one per bar here; no Accelerate lines per checkpoint file."""
    out, err = _train(tmp_path, digits, capfd)
    assert '\r' not in err and '\x1b' not in err
    progress = [line for line in err.splitlines() if PROGRESS_LINE.search(line)]
    assert 1 <= len(progress) <= 4, progress  # a run of seconds: the training bar's last line (and eval's, if slow)
    assert re.search(r'epoch 2/2: 100% 128/128 \[[\d:]+<[\d:]+, [\d.]+img/s', err), err
    assert 'epoch 2/2: train loss' in err  # the project's own INFO lines stay
    assert 'Saving current state' not in err and '[RANK 0]' not in err
    assert json.loads(out.strip().splitlines()[-1])['epochs_done'] == 2


@pytest.mark.train
def test_verbose_brings_back_the_libraries_and_quiet_leaves_the_result(tmp_path, digits, capfd):
    _, err = _train(tmp_path / 'v', digits, capfd, '--verbose')
    assert 'Saving current state' in err  # Accelerate's INFO lines, one per checkpoint file

    out, err = _train(tmp_path / 'q', digits, capfd, '-q')
    assert err == ''  # no progress, no INFO line, nothing went wrong
    assert json.loads(out.strip().splitlines()[-1])['epochs_done'] == 2  # the result


@pytest.mark.train
def test_quiet_and_verbose_exclude_each_other(capsys):
    from hybrid_zoo_cli import train as train_cli

    with pytest.raises(SystemExit) as e:
        train_cli.main(['--quiet', '--verbose'])
    assert e.value.code == 2 and '--quiet and --verbose exclude each other' in capsys.readouterr().err


def _rank(rank: int, cfg, report_dir: str, port: int) -> None:
    """One spawned rank: train with every warning recorded. Spawned, not forked: a fork after this process ran
    autograd (the export and training tests) may not run backward."""
    import warnings

    import torch
    from accelerate.state import PartialState

    from hybrid_zoo.train.loop import fit

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                      MASTER_PORT=str(port), OMP_NUM_THREADS='1')  # fmt: skip
    torch.set_num_threads(1)
    PartialState(cpu=True)  # the gloo process group
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        fit(cfg)
    Path(report_dir, f'rank{rank}.json').write_text(json.dumps([str(w.message) for w in caught]))


@pytest.mark.train
def test_data_parallel_training_warns_of_no_grad_strides(tmp_path, digits):
    """convformer_tiny at 32 px ends on a 1x1 map, where a 1x1 conv's weight gradient comes back channels_last-strided
    at this batch size: DDP warned on every rank that its strides do not match the bucket's."""
    import socket

    import torch.multiprocessing as mp

    from hybrid_zoo.train.loop import TrainConfig

    cfg = TrainConfig(
        model='convformer_tiny', dataset=str(digits), img_size=32, in_chans=1, epochs=1, batch_size=16, workers=0,
        max_train_samples=32, max_val_samples=16, no_aug=True, output_dir=str(tmp_path / 'two'),
    )  # fmt: skip
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank, args=(cfg, str(tmp_path), port), nprocs=2, start_method='spawn')
    for rank in (0, 1):
        caught = json.loads((tmp_path / f'rank{rank}.json').read_text())
        assert not [m for m in caught if 'Grad strides do not match' in m], caught


@pytest.mark.hub
def test_hub_requests_are_not_logged_one_by_one(tmp_path, digits, hf_token, capfd):
    """prepare-data --push-to talks to the Hub: httpx logged one INFO line per request; -v brings them back."""
    from hybrid_zoo_cli import data as data_cli

    for flags, shown in (((), False), (('-v',), True)):
        argv = ['--out-dir', str(tmp_path / f'out{len(flags)}'), '--shards', 'parquet', '--source', str(digits)]
        with _fresh_logging():
            assert data_cli.main([*argv, '--push-to', 'alice/logs-digits', *flags]) == 0
        err = capfd.readouterr().err
        assert ('HTTP Request:' in err) is shown, err
        assert '\r' not in err  # nor the bars of datasets and huggingface_hub
