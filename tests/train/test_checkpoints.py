"""The run folder under faults and misuse: what a run may delete, ``checkpoints/best`` after a kill and the debris
of interrupted writes, what a resume accepts, tampered or corrupt checkpoints and a cut or emptied
``metrics.jsonl``. Tiny: test_convnext at 32 px on 48 digits, one to three epochs of 3 updates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_zoo.train import checkpoints as C
from hybrid_zoo.train import data
from hybrid_zoo.train import loop as T
from hybrid_zoo_cli import train as train_cli
from hybrid_zoo_config.train import build_parser, config_from_args

pytestmark = pytest.mark.train

ARGS = ['--model', 'test_convnext', '--img-size', '32', '--in-chans', '1', '--workers', '0', '--batch-size', '16']
ARGS += ['--max-train-samples', '48', '--max-val-samples', '16', '--warmup-epochs', '0', '--no-aug']


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


def _argv(digits, out, *extra) -> list[str]:
    return ARGS + ['--dataset', str(digits), '--output-dir', str(out), *map(str, extra)]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _meta(folder: Path) -> dict:
    return json.loads((folder / 'meta.json').read_text())


def _epochs(out: Path) -> list[int]:
    return [json.loads(line)['epoch'] for line in (out / 'metrics.jsonl').read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------------------------
# M1: files the run did not write


def test_foreign_output_dir_is_refused_and_left_untouched(tmp_path, digits, caplog):
    out = tmp_path / 'project'
    (out / 'model').mkdir(parents=True)
    (out / 'model' / 'important.py').write_text('my code\n')
    (out / 'checkpoints' / 'last').mkdir(parents=True)
    (out / 'checkpoints' / 'last' / 'notes.txt').write_text('notes\n')
    (out / 'metrics.jsonl').write_text('{"mine": 1}\n')
    before = _snapshot(out)

    assert train_cli.main(_argv(digits, out, '--epochs', 1)) == 2
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == [
        'checkpoints',
        'metrics.jsonl',
        'model',
    ]
    assert 'is not empty and is not a hybrid_zoo training run' in caplog.text and 'important' not in caplog.text
    # --resume auto finds nothing to resume there: the same refusal, not a fresh start over the files
    assert train_cli.main(_argv(digits, out, '--epochs', 1, '--resume', 'auto')) == 2
    assert _snapshot(out) == before


def test_own_run_folder_with_foreign_files_is_refused_then_reused(tmp_path, digits, caplog):
    out = tmp_path / 'run'
    assert train_cli.main(_argv(digits, out, '--epochs', 1)) == 0
    assert (out / T.RUN_MARKER).is_file() and (out / 'checkpoints' / 'last' / T.MANIFEST).is_file()
    (out / 'model' / 'important.py').write_text('my code\n')
    (out / 'checkpoints' / 'best' / 'notes.txt').write_text('notes\n')
    (out / 'README.txt').write_text('about this run\n')  # beside the run's own files: never touched

    caplog.clear()
    assert train_cli.main(_argv(digits, out, '--epochs', 1)) == 2
    assert 'model/important.py' in caplog.text and 'checkpoints/best/notes.txt' in caplog.text
    assert (out / 'model' / 'important.py').read_text() == 'my code\n'
    assert (out / 'checkpoints' / 'best' / 'notes.txt').read_text() == 'notes\n'

    (out / 'model' / 'important.py').unlink()
    (out / 'checkpoints' / 'best' / 'notes.txt').unlink()
    assert train_cli.main(_argv(digits, out, '--epochs', 1)) == 2  # clean now, but it holds an earlier run
    assert 'holds an earlier run' in caplog.text
    assert train_cli.main(_argv(digits, out, '--epochs', 1, '--overwrite')) == 0  # asked: a fresh run replaces it
    assert (out / 'README.txt').read_text() == 'about this run\n'


def test_replacing_a_folder_carries_over_files_that_appeared_during_the_run(tmp_path):
    dst = tmp_path / 'model'
    dst.mkdir()
    (dst / 'config.json').write_text('old')
    (dst / 'late.txt').write_text('added while the run trained')
    tmp = tmp_path / '.model.tmp-x'
    tmp.mkdir()
    (tmp / 'config.json').write_text('new')
    C.publish_dir(tmp, dst, C.MODEL_FILES)
    assert (dst / 'config.json').read_text() == 'new' and (
        dst / 'late.txt'
    ).read_text() == 'added while the run trained'


# ----------------------------------------------------------------------------------------------------------------------
# M6 + L10: a kill between the checkpoints, debris of interrupted writes


def test_kill_before_best_copy_and_before_export_are_repaired_on_resume(tmp_path, digits, monkeypatch):
    out = tmp_path / 'run'
    real_validate, real_replace = T.validate, C.replace_dir

    def rising(run):  # every epoch improves, so epoch 2 must be copied to best/
        metrics, ema = real_validate(run)
        return {**metrics, 'top1': 10.0 * (run.epoch + 1)}, ema

    best_copies = []

    def killed(tmp, dst):  # the process dies once its copy of last/ is complete, before it is published as best/
        if Path(dst).name == 'best':
            best_copies.append(dst)
            if len(best_copies) == 2:
                raise RuntimeError('killed')
        return real_replace(tmp, dst)

    monkeypatch.setattr(T, 'validate', rising)
    monkeypatch.setattr(C, 'replace_dir', killed)
    with pytest.raises(RuntimeError, match='killed'):
        T.fit(config_from_args(_argv(digits, out, '--epochs', 2)))
    ckpt = out / 'checkpoints'
    assert _meta(ckpt / 'last')['best_epoch'] == 2 and _meta(ckpt / 'best')['epoch'] == 1  # best/ is an epoch behind
    assert [p.name for p in ckpt.glob('.best.tmp-*')]  # the complete, unpublished copy

    def killed_export(tmp, dst):
        if Path(dst).name == 'model':
            raise RuntimeError('killed')
        return real_replace(tmp, dst)

    monkeypatch.setattr(C, 'replace_dir', killed_export)
    with pytest.raises(RuntimeError, match='killed'):
        T.fit(config_from_args(_argv(digits, out, '--epochs', 2, '--resume', 'auto')))
    assert list(out.glob('.model.tmp-*'))

    monkeypatch.undo()
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--resume', 'auto')) == 0
    results = json.loads((out / 'model' / 'results.json').read_text())
    assert results['best_epoch'] == 2 and _meta(ckpt / 'best')['epoch'] == 2
    best, last = (torch.load(ckpt / n / 'optimizer.bin', weights_only=True) for n in ('best', 'last'))
    assert best['state'][0]['step'] == last['state'][0]['step']  # the same (epoch 2) state, not only its meta.json
    assert not [p.name for p in out.rglob('.*') if p.name != T.RUN_MARKER]  # no .best.tmp-*, .model.tmp-*, ...
    assert _epochs(out) == [1, 2]


# ----------------------------------------------------------------------------------------------------------------------
# M7: a resume with other options


@pytest.fixture(scope='module')
def one_of_two_epochs(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp('resume') / 'run'
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--stop-after-epoch', 1)) == 0
    return out


@pytest.mark.parametrize(
    'change, flags',
    [
        (['--lr', '0.5', '--sched', 'step'], ['--lr: checkpoint 0.001, this run 0.5', "--sched: checkpoint 'cosine'"]),
        (['--opt', 'sgd'], ["--opt: checkpoint 'adamw', this run 'sgd'"]),
        (['--epochs', '3'], ['--epochs: checkpoint 2, this run 3']),
        (['--batch-size', '8', '--grad-accum-steps', '2'], ['--batch-size: checkpoint 16', '--grad-accum-steps']),
        (['--img-size', '48'], ['--img-size: checkpoint 32, this run 48']),
        (['--mixup', '0.8', '--seed', '7'], ['--mixup: checkpoint 0.0, this run 0.8', '--seed: checkpoint 42']),
        (['--model-kwargs', 'drop_rate=0.3'], ["--model-kwargs: checkpoint {}, this run {'drop_rate': 0.3}"]),
    ],
)
def test_resume_refuses_changed_options(one_of_two_epochs, digits, caplog, change, flags):
    out = one_of_two_epochs
    before = _snapshot(out)
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--resume', 'auto', *change)) == 2
    assert 'refusing to resume' in caplog.text
    for flag in flags:
        assert flag in caplog.text
    assert _snapshot(out) == before


def test_resume_accepts_operational_changes_and_records_what_was_used(tmp_path, digits, one_of_two_epochs):
    import shutil

    out = tmp_path / 'run'
    shutil.copytree(one_of_two_epochs, out)
    argv = _argv(digits, out, '--epochs', 2, '--resume', 'auto', '--eval-batch-size', 8, '--stop-after-epoch', 2)
    assert train_cli.main(argv) == 0
    train_args = json.loads((out / 'model' / 'train_args.json').read_text())
    assert train_args['lr'] == 1e-3 and train_args['opt'] == 'adamw' and train_args['eval_batch_size'] == 8
    assert train_args['mixed_precision'] == 'no' and train_args['img_size'] == 32 and train_args['resume'] == 'auto'
    assert _meta(out / 'checkpoints' / 'last')['config'] == train_args


def test_every_option_is_classified_for_resume():
    import dataclasses

    fields = {f.name for f in dataclasses.fields(T.TrainConfig)}
    must, may = set(T.RESUME_MUST_MATCH), set(T.RESUME_MAY_CHANGE)
    assert must | may == fields and not must & may


# ----------------------------------------------------------------------------------------------------------------------
# L1 + L18: what --resume opens


class _Payload:
    """Unpickling it creates ``path``: the stand-in for code run by a crafted pickle."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_resume_refuses_tampered_unknown_and_corrupt_files(tmp_path, digits, caplog):
    out = tmp_path / 'run'
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--stop-after-epoch', 1)) == 0
    last = out / 'checkpoints' / 'last'
    pwned = tmp_path / 'PWNED'
    resume = _argv(digits, out, '--epochs', 2, '--resume', 'auto')

    def refused(*expected: str) -> None:
        caplog.clear()
        assert train_cli.main(resume) == 2
        for text in expected:
            assert text in caplog.text, caplog.text
        assert not pwned.exists()

    original = (last / 'custom_checkpoint_0.pkl').read_bytes()
    torch.save(_Payload(str(pwned)), last / 'custom_checkpoint_0.pkl')
    refused('custom_checkpoint_0.pkl', 'corrupt or was changed since it was saved')
    (last / 'custom_checkpoint_0.pkl').write_bytes(original)

    torch.save(_Payload(str(pwned)), last / 'custom_checkpoint_1.pkl')  # a pickle accelerate would not even open
    refused("not written by the trainer: ['checkpoints/last/custom_checkpoint_1.pkl']", 'folders you trust')
    (last / 'custom_checkpoint_1.pkl').unlink()

    original = (last / 'random_states_0.pkl').read_bytes()
    (last / 'random_states_0.pkl').write_bytes(b'not the RNG state')  # was skipped with an INFO line
    refused('random_states_0.pkl', 'corrupt or was changed')
    (last / 'random_states_0.pkl').write_bytes(original)

    for name in ('model.safetensors', 'optimizer.bin', 'meta.json'):  # truncated by a full disk or a bad copy
        original = (last / name).read_bytes()
        (last / name).write_bytes(original[: len(original) // 2])
        refused(f'{name} is corrupt', f'--resume {out / "checkpoints" / "best"}', '--output-dir elsewhere')
        (last / name).write_bytes(original)

    original = (last / 'optimizer.bin').read_bytes()
    (last / 'optimizer.bin').write_bytes(original[:100])
    caplog.clear()  # the way out the message gives: resume from best/, which replaces the broken last/
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--resume', out / 'checkpoints' / 'best')) == 0
    assert _meta(last)['epoch'] == 2 and _epochs(out) == [1, 2]


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory, digits):
    """A run stopped after epoch 1 of 2: ``checkpoints/last`` is what a resume opens."""
    out = tmp_path_factory.mktemp('stopped') / 'run'
    assert train_cli.main(_argv(digits, out, '--epochs', 2, '--stop-after-epoch', 1)) == 0
    return out


def _rng_tampered(original: bytes):
    """What a tampered or damaged RNG-state pickle may hold: random bytes, a cut copy, or other pickled values."""
    from hypothesis import strategies as st

    def pickled(value) -> bytes:
        import io

        buf = io.BytesIO()
        torch.save(value, buf)
        return buf.getvalue()

    states = torch.load(__import__('io').BytesIO(original), weights_only=False)
    wrong_values = st.sampled_from(
        [
            {},
            {k: v for k, v in states.items() if k != 'torch_manual_seed'},
            {**states, 'torch_manual_seed': torch.zeros(3, dtype=torch.uint8)},
            {**states, 'numpy_random_seed': ('MT19937', [1, 2, 3], 0, 0, 0.0)},
            {**states, 'random_state': (3, (1, 2), None)},
            [1, 2, 3],
            'not the RNG state',
        ]
    ).map(pickled)
    return st.one_of(
        st.binary(max_size=256),
        st.integers(0, len(original) - 1).map(lambda n: original[:n]),
        wrong_values,
    )


def test_a_tampered_rng_state_with_a_rewritten_manifest_is_refused(tmp_path, stopped_run, digits, caplog):
    """The manifest guards against accidents; a state accelerate would skip must still stop the resume."""
    import shutil

    from hypothesis import HealthCheck, given, settings

    last = stopped_run / 'checkpoints' / 'last'
    original = (last / 'random_states_0.pkl').read_bytes()
    C.check_rng_state(last, 0)  # the state as saved is accepted

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(content=_rng_tampered(original))
    def refused(content: bytes) -> None:
        folder = tmp_path / 'probe'
        folder.mkdir(exist_ok=True)
        (folder / 'random_states_0.pkl').write_bytes(content)
        with pytest.raises(C.CheckpointError, match=r'random_states_0\.pkl does not hold the random-number state'):
            C.check_rng_state(folder, 0)

    refused()

    run = tmp_path / 'run'
    shutil.copytree(stopped_run, run)
    tampered = run / 'checkpoints' / 'last'
    (tampered / 'random_states_0.pkl').write_bytes(b'not the RNG state')
    C.write_manifest(tampered)  # whoever changed the file rewrote the manifest too
    caplog.clear()
    assert train_cli.main(_argv(digits, run, '--epochs', 2, '--resume', 'auto')) == 2
    assert 'does not hold the random-number state of process 0' in caplog.text
    assert '--output-dir elsewhere' in caplog.text and not (run / 'model').exists()


def _write_rng_states(folder: Path, **changes) -> Path:
    """``random_states_0.pkl`` as accelerate's ``save_state`` writes it on this machine, with ``changes`` applied
    (a value of None removes the key)."""
    import random

    import numpy as np

    states = {
        'step': 0,
        'random_state': random.getstate(),
        'numpy_random_seed': np.random.get_state(),
        'torch_manual_seed': torch.get_rng_state(),
    }
    states.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in states.items() if v is not None}, folder / 'random_states_0.pkl')
    return folder


def _gpu_state(dtype=torch.uint8, size: int = 16) -> torch.Tensor:
    """A state of the shape ``torch.cuda.get_rng_state()`` returns: seed and Philox offset, 16 bytes."""
    return torch.arange(size).to(dtype)


_device_state_values = st.one_of(
    st.builds(_gpu_state, st.sampled_from([torch.uint8, torch.int8, torch.int64, torch.float32]), st.integers(0, 24)),
    st.just('not a state'),
    st.integers(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.one_of(_device_state_values, st.lists(_device_state_values, max_size=3)))
def test_a_gpu_rng_state_is_checked_on_a_machine_without_one(value, tmp_path):
    """accelerate applies ``torch_cuda_manual_seed`` (one state per GPU) in the same silent try as the CPU states,
    and not at all without a GPU: its format is checked here, the one CUDA's generator takes (a uint8 tensor of 16
    bytes, or 8 from older PyTorch)."""

    def usable(state) -> bool:
        return isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.numel() in (8, 16)

    folder = _write_rng_states(tmp_path / 'probe', torch_cuda_manual_seed=value)
    if isinstance(value, list) and value and all(map(usable, value)):
        C.check_rng_state(folder, 0)
    else:
        with pytest.raises(C.CheckpointError, match=r"does not hold the random-number state.*'torch_cuda_manual_seed'"):
            C.check_rng_state(folder, 0)


def test_every_key_load_state_applies_is_checked(tmp_path):
    C.check_rng_state(_write_rng_states(tmp_path / 'as-saved'), 0)
    C.check_rng_state(_write_rng_states(tmp_path / 'from-a-gpu', torch_cuda_manual_seed=[_gpu_state()] * 2), 0)
    C.check_rng_state(_write_rng_states(tmp_path / 'from-a-mac', torch_mps_manual_seed=_gpu_state(size=44)), 0)
    refused = {
        'no-file': tmp_path / 'empty',
        'step-text': _write_rng_states(tmp_path / 'step-text', step='3'),
        'step-negative': _write_rng_states(tmp_path / 'step-negative', step=-1),
        'step-float': _write_rng_states(tmp_path / 'step-float', step=1.5),
        'mps-list': _write_rng_states(tmp_path / 'mps-list', torch_mps_manual_seed=[_gpu_state()]),
        'mps-float': _write_rng_states(tmp_path / 'mps-float', torch_mps_manual_seed=_gpu_state(torch.float32)),
    }
    (tmp_path / 'empty').mkdir()
    for name, folder in refused.items():
        with pytest.raises(C.CheckpointError, match='does not hold the random-number state'):
            C.check_rng_state(folder, 0)
            pytest.fail(f'{name} was accepted')


def test_resume_help_says_it_unpickles(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'unpickles' in text and 'folders you trust' in text and 'sha256' in text


# ----------------------------------------------------------------------------------------------------------------------
# L2: metrics.jsonl cut short or emptied


def test_torn_or_emptied_metrics_log_keeps_history(tmp_path, digits, caplog):
    out = tmp_path / 'run'
    assert train_cli.main(_argv(digits, out, '--epochs', 3, '--stop-after-epoch', 1)) == 0
    with (out / 'metrics.jsonl').open('a') as f:
        f.write('{"epoch": 2, "train_lo')  # a kill in the middle of a write
    assert train_cli.main(_argv(digits, out, '--epochs', 3, '--stop-after-epoch', 2, '--resume', 'auto')) == 0
    assert 'is not an epoch record (cut short?)' in caplog.text and _epochs(out) == [1, 2]

    (out / 'metrics.jsonl').write_text('')  # what a kill during a non-atomic rewrite leaves
    caplog.clear()
    assert train_cli.main(_argv(digits, out, '--epochs', 3, '--resume', 'auto')) == 0
    assert 'lacks epoch(s) [1, 2]' in caplog.text and _epochs(out) == [1, 2, 3]
    assert not list(out.glob('.metrics.jsonl.*'))
