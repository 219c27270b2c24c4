"""The ``hybrid-zoo`` command starts without torch or timm: every sub-command's ``--help`` and usage errors are
instant, ``--version`` works, and each sub-command's module runs with the parser the command line showed."""

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
def test_every_subcommand_parses_without_torch_and_runs_with_that_parser(command):
    parser_module, runner, _ = COMMANDS[command]
    code = (
        f'from hybrid_zoo_cli import main\n'
        f'try:\n    main([{command!r}, "--help"])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n'
    )
    proc = _light(code)
    assert proc.returncode == 0 and 'usage: hybrid-zoo' in proc.stdout, proc.stderr[-2000:]
    light = importlib.import_module(f'hybrid_zoo_cli.{parser_module}')
    assert all(a.help for a in light.build_parser()._actions), command  # every flag explained
    heavy = importlib.import_module(runner)
    shared = [e for e in ('parse_args', 'build_parser') if hasattr(heavy, e)]  # bench: presets on top of the parser
    assert shared and all(getattr(heavy, e) is getattr(light, e) for e in shared), command


def test_version_and_usage_errors_answer_without_torch():
    proc = _light('from hybrid_zoo_cli import main, package_version; assert main(["--version"]) == 0')
    assert proc.returncode == 0 and proc.stdout.startswith('hybrid-zoo 0.'), proc.stderr
    proc = _light(
        'from hybrid_zoo_cli import main\ntry:\n    main(["train", "--epochs", "x"])\nexcept SystemExit as e:\n    print(e.code)'
    )
    assert proc.returncode == 0 and proc.stdout.strip() == '2' and "invalid int value: 'x'" in proc.stderr
    assert _light('from hybrid_zoo_cli import main; assert main(["nope"]) == 2').returncode == 0
