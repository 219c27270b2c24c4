"""The ``hybrid-zoo`` command starts without torch or timm: every sub-command's ``--help`` and usage errors are
instant, ``--version`` works, and each sub-command's module owns both its parser and its ``main``."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from hybrid_zoo_cli import COMMANDS


def _light(code: str) -> subprocess.CompletedProcess:
    check = "\nassert 'torch' not in sys.modules and 'timm' not in sys.modules, sorted(sys.modules)"
    return subprocess.run([sys.executable, '-c', 'import sys; ' + code + check], capture_output=True, text=True)


@pytest.mark.parametrize('command', list(COMMANDS))
def test_every_subcommand_parses_without_torch_and_owns_its_main(command):
    module_name, _ = COMMANDS[command]
    code = (
        f'from hybrid_zoo_cli import main\n'
        f'try:\n    main([{command!r}, "--help"])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n'
    )
    proc = _light(code)
    assert proc.returncode == 0 and 'usage: hybrid-zoo' in proc.stdout, proc.stderr[-2000:]
    module = importlib.import_module(f'hybrid_zoo_cli.{module_name}')
    assert all(a.help for a in module.build_parser()._actions), command  # every flag explained
    assert callable(module.main) and module.main.__module__ == module.__name__, command


def test_version_and_usage_errors_answer_without_torch():
    proc = _light('from hybrid_zoo_cli import main, package_version; assert main(["--version"]) == 0')
    assert proc.returncode == 0 and proc.stdout.startswith('hybrid-zoo 0.'), proc.stderr
    proc = _light(
        'from hybrid_zoo_cli import main\ntry:\n    main(["train", "--epochs", "x"])\nexcept SystemExit as e:\n    print(e.code)'
    )
    assert proc.returncode == 0 and proc.stdout.strip() == '2' and "invalid int value: 'x'" in proc.stderr
    assert _light('from hybrid_zoo_cli import main; assert main(["nope"]) == 2').returncode == 0


def test_the_trainer_module_parses_the_same_flags_as_the_command():
    """``python -m hybrid_zoo.train`` (what ``accelerate launch`` runs) and ``hybrid-zoo train`` share one parser."""
    proc = subprocess.run([sys.executable, '-m', 'hybrid_zoo.train', '--help'], capture_output=True, text=True)
    cli = subprocess.run([sys.executable, '-m', 'hybrid_zoo_cli', 'train', '--help'], capture_output=True, text=True)
    assert proc.returncode == 0 and cli.returncode == 0, proc.stderr[-2000:]
    flags = {w for w in proc.stdout.split() if w.startswith('--')}
    assert '--resume' in flags and flags == {w for w in cli.stdout.split() if w.startswith('--')}
    bad = subprocess.run([sys.executable, '-m', 'hybrid_zoo.train', '--epochs', '0'], capture_output=True, text=True)
    assert bad.returncode == 2 and '--epochs must be an integer >= 1, got 0' in bad.stderr


def test_demo_help_shows_every_default():
    from hybrid_zoo_cli.demo import build_parser

    text = ' '.join(build_parser().format_help().split()).split('options:', 1)[1]
    for flag, default in (('--epochs', '2'), ('--img-size', '64'), ('--output-dir', 'runs/demo')):
        assert f'(default: {default})' in text.split(flag, 1)[1].split('--', 1)[0], flag


def test_eval_refuses_an_unusable_model_folder_before_preparing_any_data(tmp_path, monkeypatch):
    import hybrid_zoo.train.evaluate as evaluate_mod
    from hybrid_zoo.factory import ModelLoadError

    folder = tmp_path / 'model'
    folder.mkdir()
    (folder / 'config.json').write_text('{"architecture": "convformer_tiny", "num_classes": 3}')  # no weights

    def never(*args, **kwargs):
        raise AssertionError('the dataset was opened before the model folder was checked')

    monkeypatch.setattr(evaluate_mod, 'load_eval_split', never)
    with pytest.raises(ModelLoadError, match='has no weights'):
        evaluate_mod.evaluate(str(folder), 'default', 'test', cpu=True, embedded_cache=str(tmp_path / 'cache'))
    assert not (tmp_path / 'cache').exists()
