"""``hybrid-zoo export`` at the edges of its options: every bad value is a one-line error, exit 2, no traceback, and
nothing is written (not even a temporary file) when the export cannot go through."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid_zoo_cli.export import build_parser, main

NUMBER_FLAGS = ('--calibration-samples', '--img-size', '--opset')


def _bounds(flag: str) -> tuple[int, int]:
    """The range the parser itself checks for ``flag`` (its ``IntRange`` type)."""
    action = next(a for a in build_parser()._actions if flag in a.option_strings)
    return action.type.bounds()


def _outside(flag: str):
    """Values ``flag`` must refuse: integers below and above its own range, and text that is no integer."""
    low, high = _bounds(flag)
    return st.one_of(
        st.integers(max_value=low - 1), st.integers(min_value=high + 1), st.sampled_from(['x', '1.5', '', f'{low}.0'])
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=st.sampled_from(NUMBER_FLAGS).flatmap(lambda flag: st.tuples(st.just(flag), _outside(flag))))
def test_out_of_range_numbers_are_usage_errors(case, capsys):
    flag, value = case
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([flag, str(value)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    low, high = _bounds(flag)
    assert f'{flag}: expected an integer from {low} to {high}, got' in err and 'Traceback' not in err


@settings(max_examples=30, deadline=None)
@given(case=st.sampled_from(NUMBER_FLAGS).flatmap(lambda flag: st.tuples(st.just(flag), st.integers(*_bounds(flag)))))
def test_every_number_in_range_is_taken(case):
    flag, value = case
    args = build_parser().parse_args([flag, str(value)])
    assert getattr(args, flag[2:].replace('-', '_')) == value


def test_the_newest_known_opset_is_accepted_and_one_more_is_not(capsys):
    import onnx

    top = onnx.defs.onnx_opset_version()
    assert build_parser().parse_args(['--opset', str(top)]).opset == top
    with pytest.raises(SystemExit):
        build_parser().parse_args(['--opset', str(top + 1)])


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    from hybrid_zoo.train import data

    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return str(path)


def _refused(argv, capsys, expected: str) -> None:
    assert main(['--model', 'test_convnext', *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and 'Traceback' not in err, err


def test_an_output_that_is_a_folder_or_unwritable_is_refused_before_anything_runs(tmp_path, capsys):
    _refused(['--output', str(tmp_path)], capsys, 'is a folder; expected the path of a file to write')
    (tmp_path / 'a-file').write_text('not a folder')
    _refused(['--output', str(tmp_path / 'a-file' / 'm.onnx')], capsys, 'cannot be written')
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root writes anywhere: nothing to test there
            pytest.skip('running as a user who can write to any folder')
        _refused(['--output', str(locked / 'sub' / 'm.onnx')], capsys, 'cannot be written')
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    ('extra', 'expected'),
    [
        (['--calibration-dataset', 'no/such-local-folder/'], '--calibration-dataset no/such-local-folder/'),
        (['--calibration-split', 'nope'], "'nope'"),
        (['--evaluate-split', 'validation'], "'validation'"),
    ],
)
def test_a_missing_dataset_or_split_is_refused_before_any_file_is_written(extra, expected, digits, tmp_path, capsys):
    out = tmp_path / 'out' / 'm.onnx'
    argv = ['--int8', '--calibration-dataset', digits, '--output', str(out), '--exporter', 'torchscript', *extra]
    _refused(argv, capsys, expected)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
