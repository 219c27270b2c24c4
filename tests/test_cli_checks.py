"""Usage errors every command shares, found by reading the parsers rather than listed by hand: each seed option
refuses what numpy's and torch's generators cannot take, in one line with exit 2, before the command imports the
library (torch, timm, datasets), so nothing is prepared or trained first."""

from __future__ import annotations

import builtins
import importlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_zoo_cli import COMMANDS, main
from hybrid_zoo_config.train import SEED_MAX


def _options(wanted) -> list[tuple[str, str]]:
    """``(command, flag)`` of every option of every command's parser whose action ``wanted`` accepts."""
    found = []
    for command, (module, _) in COMMANDS.items():
        for action in importlib.import_module(f'hybrid_zoo_cli.{module}').build_parser()._actions:
            if action.option_strings and action.dest != 'help' and wanted(action):
                found.append((command, max(action.option_strings, key=len)))
    return found


@pytest.fixture
def no_library(monkeypatch):
    """Fail at the first import of the library, torch or timm: a usage error must come before any work."""
    real_import = builtins.__import__

    def guarded(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.partition('.')[0] in ('hybrid_zoo', 'torch', 'timm'):
            raise AssertionError(f'imported {name}: the command started its work')
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, '__import__', guarded)


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's usage errors
        return e.code


# ----------------------------------------------------------------------------------------------------------------------
# Seeds

SEED_OPTIONS = _options(lambda action: 'seed' in action.dest)


def test_the_seed_options_are_found():
    assert {('train', '--seed'), ('compare', '--seeds')} <= set(SEED_OPTIONS), SEED_OPTIONS


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    option=st.sampled_from(SEED_OPTIONS),
    seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=SEED_MAX + 1)),
)
def test_a_seed_the_generators_cannot_take_is_a_usage_error_in_every_command(option, seed, no_library, capsys):
    command, flag = option
    capsys.readouterr()
    assert _run([command, flag, str(seed)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(f'{flag} must be an integer in [0, {SEED_MAX}], got {seed}'), err
    assert 'Traceback' not in err


@settings(max_examples=60, deadline=None)
@given(option=st.sampled_from(SEED_OPTIONS), seed=st.integers(0, SEED_MAX))
def test_every_seed_the_generators_take_is_parsed(option, seed):
    command, flag = option
    parser = importlib.import_module(f'hybrid_zoo_cli.{COMMANDS[command][0]}').build_parser()
    action = next(a for a in parser._actions if flag in a.option_strings)
    assert getattr(parser.parse_args([flag, str(seed)]), action.dest) in (seed, [seed])
