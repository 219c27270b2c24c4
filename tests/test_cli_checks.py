"""Usage errors every command shares, found by reading the parsers rather than listed by hand: each seed option
refuses what numpy's and torch's generators cannot take, and each output folder or file that cannot be made or
written is refused. Both are one line and exit 2, before the command imports the library (torch, timm, datasets),
so nothing is prepared, trained or written first."""

from __future__ import annotations

import builtins
import importlib
import os
import re
from pathlib import Path

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


# ----------------------------------------------------------------------------------------------------------------------
# Output folders and files

OUT = '<out>'  # stands for the folder or file under test
IN = '<in>'  # stands for an existing input file
# every output option: (command, flag, 'folder' or 'file', the command line that reaches its check)
OUTPUTS = [
    ('prepare-data', '--out-dir', 'folder', ['--out-dir', OUT]),
    ('train', '--output-dir', 'folder', ['--output-dir', OUT]),
    ('eval', '--output-dir', 'folder', ['--model', 'convformer_tiny', '--output-dir', OUT]),
    ('demo', '--output-dir', 'folder', ['--output-dir', OUT]),
    ('compare', '--work-dir', 'folder', ['--work-dir', OUT]),
    ('compare', '--results', 'file', ['--results', OUT]),
    ('bench', '--results', 'folder', ['--results', OUT]),
    ('profile', '--results', 'folder', ['--results', OUT]),
    ('profile', '--out', 'file', ['--out', OUT]),
    ('stats', '--results', 'folder', ['--results', OUT]),
    ('stats', '--out', 'file', ['--out', OUT]),
    ('front', '--results', 'folder', ['--accuracy', IN, '--speed', IN, '--results', OUT]),
    ('export', '--output', 'file', ['--output', OUT]),
    ('export', '--results', 'file', ['--measure', '--results', OUT]),
    ('export', '--record', 'file', ['--int8', '--calibration-dataset', IN, '--record', OUT]),
    ('hub-server', '--data-dir', 'folder', ['--port', '0', '--data-dir', OUT]),
]
# options with an output's name that are read, not written
READ_ONLY = {('render-docs', '--results'): 'the result files the docs are rendered from'}
_OUTPUT_NAME = re.compile(r'out|out_dir|output|output_dir|results|work_dir|record|data_dir')


def test_every_output_option_is_checked():
    named = set(_options(lambda action: _OUTPUT_NAME.fullmatch(action.dest)))
    # --data-dir of train, eval, demo and compare is a refusal (timm's dataset root), not a folder they write
    named -= {(command, '--data-dir') for command in ('train', 'eval', 'demo', 'compare')}
    assert named == {(command, flag) for command, flag, _, _ in OUTPUTS} | set(READ_ONLY)


def _snapshot(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob('*'))


@pytest.mark.parametrize('where', ['below-a-file', 'unwritable-folder'])
@pytest.mark.parametrize(('command', 'flag', 'kind', 'argv'), OUTPUTS, ids=[f'{c} {f}' for c, f, _, _ in OUTPUTS])
def test_an_output_that_cannot_be_written_is_a_usage_error_before_any_work(
    command, flag, kind, argv, where, tmp_path, monkeypatch, no_library, capsys
):
    monkeypatch.chdir(tmp_path)  # the defaults of the other outputs (runs/..., model.onnx) land here
    blocker = tmp_path / 'a-file'
    blocker.write_text('mine\n')
    if where == 'unwritable-folder':
        blocker = tmp_path / 'locked'
        blocker.mkdir(mode=0o500)
        if os.access(blocker, os.W_OK):
            pytest.skip('this user can write any folder (root)')
    target = blocker / 'sub' / ('results.json' if kind == 'file' else 'folder')
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert (
        _run([command, *[str(target) if a == OUT else str(tmp_path / 'a-file') if a == IN else a for a in argv]]) == 2
    )
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert flag in last and str(target) in last and 'Traceback' not in err, err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ('command', 'flag', 'kind', 'argv'),
    [o for o in OUTPUTS if o[0] != 'hub-server'],  # a server that may start would serve until stopped
    ids=[f'{c} {f}' for c, f, _, _ in OUTPUTS if c != 'hub-server'],
)
def test_an_output_that_can_be_written_is_taken(command, flag, kind, argv, tmp_path, monkeypatch, no_library):
    """The same command lines with a path that can be made get past the check: to the library's import."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'input').write_text('{}\n')
    target = tmp_path / 'new' / ('results.json' if kind == 'file' else 'folder')
    with pytest.raises(AssertionError, match='the command started its work'):
        _run([command, *[str(target) if a == OUT else str(tmp_path / 'input') if a == IN else a for a in argv]])
    assert not (tmp_path / 'new').exists()
