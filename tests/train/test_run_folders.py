"""Where a training run writes: a new folder per run by default (timm's train.py layout), an earlier run never
replaced unless asked, and nothing left behind by a run that fails before its first step."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hybrid_zoo  # noqa: F401  (registers the models)
from hybrid_zoo.train import checkpoints, data
from hybrid_zoo.train import loop as T
from hybrid_zoo.train.checkpoints import OutputDirError
from hybrid_zoo.train.loop import TrainConfig, fit
from hybrid_zoo_cli import train as train_cli

pytestmark = pytest.mark.train

RUN_NAME = re.compile(r'\d{8}-\d{6}-test_convnext(-\d+)?')


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


def _cfg(dataset, **overrides) -> TrainConfig:
    base = dict(
        model='test_convnext',
        dataset=str(dataset),
        img_size=32,
        in_chans=1,
        epochs=1,
        batch_size=16,
        workers=0,
        max_train_samples=32,
        max_val_samples=32,
        warmup_epochs=0,
        hflip=0.0,
    )
    return TrainConfig(**{**base, **overrides})


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def test_each_run_without_an_output_dir_gets_its_own_folder(tmp_path, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = Path(fit(_cfg(digits))['output_dir'])
    before = _files(first)
    second = Path(fit(_cfg(digits))['output_dir'])
    assert first != second and first.parent == second.parent == Path('runs/train')
    assert RUN_NAME.fullmatch(first.name) and RUN_NAME.fullmatch(second.name)
    assert _files(first) == before  # the earlier run is untouched
    assert (second / 'model' / 'model.safetensors').is_file()


def test_resume_auto_without_an_output_dir_continues_the_newest_run_of_that_model(tmp_path, digits, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = Path(fit(_cfg(digits, epochs=2))['output_dir'])  # finished: a checkpoint at epoch 2
    stopped = Path(fit(_cfg(digits, epochs=2, stop_after_epoch=1))['output_dir'])
    assert older != stopped
    resumed = fit(_cfg(digits, epochs=2, resume='auto'))
    assert Path(resumed['output_dir']) == stopped and resumed['epochs_done'] == 2
    assert sorted(p.name for p in Path('runs/train').iterdir()) == sorted([older.name, stopped.name])


def test_an_output_dir_holding_a_run_is_refused_unless_resumed_or_overwritten(tmp_path, digits, caplog):
    out = tmp_path / 'run'
    fit(_cfg(digits, output_dir=str(out)))
    before = _files(out)
    with pytest.raises(OutputDirError, match=r'holds an earlier run \(a checkpoint at epoch 1\).*--resume auto.*--ov'):
        fit(_cfg(digits, output_dir=str(out), seed=1))
    argv = ['--model', 'test_convnext', '--dataset', str(digits), '--img-size', '32', '--in-chans', '1']
    assert train_cli.main([*argv, '--epochs', '1', '--output-dir', str(out)]) == 2
    assert 'holds an earlier run' in caplog.text  # the one line the command prints
    assert _files(out) == before
    assert fit(_cfg(digits, output_dir=str(out), resume='auto'))['epochs_done'] == 1  # continuing it: nothing to do
    assert fit(_cfg(digits, output_dir=str(out), seed=1, overwrite=True))['epochs_done'] == 1
    assert _files(out)['model/model.safetensors'] != before['model/model.safetensors']


# every step of a run's start, and its first training step: a failure at any of them leaves nothing behind
STAGES = ['_open_data', 'build_model', '_resolved_config', '_resume_point', '_build_run', 'train_one_epoch']


@pytest.mark.parametrize('error', [RuntimeError('boom'), KeyboardInterrupt()], ids=['error', 'interrupt'])
@pytest.mark.parametrize('stage', STAGES)
def test_a_run_failing_before_its_first_step_leaves_nothing_behind(tmp_path, digits, monkeypatch, stage, error):
    monkeypatch.chdir(tmp_path)

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(T, stage, fail)
    with pytest.raises(type(error)):
        fit(_cfg(digits))  # the default folder, runs/train/<stamp>-<model>
    with pytest.raises(type(error)):
        fit(_cfg(digits, output_dir='deep/er/run', log_with='tensorboard'))  # a folder and its parents
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_start_keeps_a_folder_it_did_not_make(tmp_path, digits):
    empty = tmp_path / 'mine'
    empty.mkdir()
    with pytest.raises(data.DataError):
        fit(_cfg(tmp_path / 'no-such-data', output_dir=str(empty)))
    assert empty.is_dir()  # the user's folder stays (its marker, written by the run, goes)
    assert list(empty.iterdir()) == []
    crowded = tmp_path / 'new'

    def intruder(*args, **kwargs):  # a file someone else puts in the new folder while the run starts
        (crowded / 'notes.txt').write_text('mine')
        raise RuntimeError('boom')

    with pytest.MonkeyPatch.context() as m:
        m.setattr(T, 'build_model', intruder)
        with pytest.raises(RuntimeError):
            fit(_cfg(digits, output_dir=str(crowded)))
    assert sorted(p.name for p in crowded.iterdir()) == ['notes.txt']


@settings(max_examples=60, deadline=None)
@given(model=st.text(min_size=1, max_size=120), taken=st.integers(0, 3))
def test_a_default_run_folder_is_a_new_timestamped_name_under_runs_train(tmp_path_factory, model, taken):
    """Any model name (a Hub id, a local-dir path, odd characters) gives one safe folder name under runs/train,
    never an existing one."""
    base = tmp_path_factory.mktemp('cwd')
    now = datetime.datetime(2026, 12, 7, 20, 30, 5)
    cfg = TrainConfig.__new__(TrainConfig)  # run_folder reads only these fields; the model name is not checked here
    cfg.output_dir, cfg.model, cfg.resume = None, model, None
    with pytest.MonkeyPatch.context() as m:
        m.chdir(base)
        for _ in range(taken):
            checkpoints.run_folder(cfg, now=now).mkdir(parents=True)
        out = checkpoints.run_folder(cfg, now=now)
    assert out.parent == checkpoints.TRAIN_RUNS and not (base / out).exists()
    assert re.fullmatch(r'20261207-203005-[A-Za-z0-9_.-]{1,80}(-[1-3])?', out.name), out.name
    assert out.name.endswith(f'-{taken}') or taken == 0
