"""Invalid options: usage errors (exit 2, one line naming the flag) before torch is imported, the same checks for
programmatic ``TrainConfig`` use, and the model-dependent ones (constructor arguments, input size, a batch of one
through BatchNorm) as one-line errors with exit 2 instead of tracebacks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybrid_zoo_cli import train as train_cli
from hybrid_zoo_config import train as C

pytestmark = pytest.mark.train


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['--val-fraction', '0'], '--val-fraction must be in (0, 1), got 0.0'),
        (['--val-fraction', '1'], '--val-fraction must be in (0, 1)'),
        (['--val-fraction', '1.5'], '--val-fraction must be in (0, 1)'),
        (['--val-fraction', '-0.1'], '--val-fraction must be in (0, 1)'),
        (['--batch-size', '0'], '--batch-size must be an integer >= 1, got 0'),
        (['--batch-size', '-4'], '--batch-size must be an integer >= 1, got -4'),
        (['--epochs', '0'], '--epochs must be an integer >= 1, got 0'),
        (['--epochs', '-1'], '--epochs must be an integer >= 1'),
        (['--grad-accum-steps', '0'], '--grad-accum-steps must be an integer >= 1'),
        (['--max-train-samples', '0'], '--max-train-samples must be an integer >= 1'),
        (['--img-size', '0'], '--img-size must be an integer >= 1, got 0'),
        (['--lr', 'nan'], '--lr must be a finite number, got nan'),
        (['--lr', '0'], '--lr must be in (0, inf)'),
        (['--min-lr', 'inf'], '--min-lr must be a finite number'),
        (['--scale', '0.9', '0.1'], '--scale must be MIN MAX with 0 < MIN <= MAX'),
        (['--in-chans', '2'], '--in-chans must be 1 (grayscale) or 3 (RGB), got 2'),
        (['--mixup', '0.8', '--batch-size', '15'], 'mixup/cutmix need an even --batch-size, got 15'),
        (['--epochs', '0', '--lr', 'nan'], '--epochs must be an integer >= 1, got 0; --lr must be a finite number'),
    ],
)
def test_bad_values_are_usage_errors(argv, expected, capsys):
    with pytest.raises(SystemExit) as e:
        C.config_from_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and 'Traceback' not in err


def test_the_hybrid_zoo_command_refuses_before_importing_torch(capsys):
    import subprocess
    import sys

    code = (
        'import sys; from hybrid_zoo_cli import main\n'
        'try:\n    main(["train", "--epochs", "0"])\n'
        'except SystemExit as e:\n    print("exit", e.code, "torch" in sys.modules)\n'
    )
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == 'exit 2 False' and '--epochs must be an integer >= 1' in done.stderr


def test_programmatic_config_is_checked_too():
    import dataclasses

    error = getattr(C, 'TrainConfigError', ())  # the class that says so
    with pytest.raises(error, match='--batch-size must be an integer >= 1, got 0'):
        C.TrainConfig(batch_size=0)
    with pytest.raises(error, match='--val-fraction'):
        C.TrainConfig(val_fraction=1.0)
    with pytest.raises(error, match='--grad-accum-steps'):
        dataclasses.replace(C.TrainConfig(), grad_accum_steps=0)


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    from hybrid_zoo.train import data

    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['--model', 'test_convnext', '--model-kwargs', 'no_such_arg=1'], "unexpected keyword argument 'no_such_arg'"),
        (['--model', 'convformer_tiny', '--img-size', '16'], 'convformer_tiny cannot take 16x16 px inputs'),
        (['--model', 'test_resnet', '--batch-size', '1'], '--batch-size 1: with 1 image(s) per process a BatchNorm'),
    ],
)
def test_options_the_model_cannot_take_exit_2(tmp_path, digits, caplog, argv, expected):

    common = ['--dataset', str(digits), '--img-size', '32', '--in-chans', '1', '--workers', '0', '--epochs', '1']
    common += ['--max-train-samples', '8', '--max-val-samples', '4', '--batch-size', '4']
    common += ['--output-dir', str(tmp_path / 'run')]
    assert train_cli.main(common + argv) == 2
    assert expected in caplog.text


@settings(max_examples=60, deadline=None)
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32)))
def test_seeds_numpy_and_torch_cannot_take_are_usage_errors(seed):
    import contextlib
    import io

    err = io.StringIO()
    with pytest.raises(SystemExit) as e, contextlib.redirect_stderr(err):
        C.config_from_args(['--seed', str(seed)])
    assert e.value.code == 2
    assert f'--seed must be an integer in [0, {2**32 - 1}], got {seed}' in err.getvalue()
    assert 'Traceback' not in err.getvalue()


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_every_seed_the_config_accepts_seeds_numpy_and_torch(seed):
    import numpy as np
    import torch
    from accelerate.utils import set_seed

    cfg = C.config_from_args(['--seed', str(seed)])
    set_seed(cfg.seed)  # what the trainer does with it
    np.random.default_rng(cfg.seed)
    assert torch.initial_seed() == seed
