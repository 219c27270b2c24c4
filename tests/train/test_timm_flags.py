"""timm's train.py flag names: the ones that mean the same thing here are accepted, the others fail at once (exit 2)
with the option to use instead; ``--drop`` is no longer an ambiguous prefix."""

from __future__ import annotations

import pytest

from hybrid_zoo_config.train import TIMM_REFUSED, build_parser

ALIASES = [
    (['-b', '8'], 'batch_size', 8),
    (['-j', '0'], 'workers', 0),
    (['--model-ema'], 'ema', True),
    (['--drop', '0.2'], 'drop_rate', 0.2),
]


@pytest.mark.parametrize(('argv', 'dest', 'value'), ALIASES)
def test_timm_spellings_of_the_same_option_are_accepted(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


@pytest.mark.parametrize('flag', sorted(TIMM_REFUSED))
def test_timm_flags_that_differ_are_refused_with_ours_named(flag, capsys):
    value = {'0': [], '?': [], '1': ['x'], '+': ['3', '64', '64']}[TIMM_REFUSED[flag][0]]
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([flag, *value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f'{flag} is a timm train.py flag; here: {TIMM_REFUSED[flag][1]}' in err and 'Traceback' not in err
