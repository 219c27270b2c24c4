"""No project-tracker words ("issue 12", "the bench issue") in the package, its command lines or the tools: a
reader of the code or of ``--help`` has no tracker to look them up in (the docs are checked by render-docs)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import hybrid_zoo_cli

ROOT = Path(__file__).resolve().parent.parent
TRACKER = re.compile(r'\b(?:issue #?\d+|the \w+ issue|benchmark issue)\b', re.I)


def test_no_tracker_words_in_code():
    files = [
        p for d in ('hybrid_zoo', 'hybrid_zoo_cli', 'hybrid_zoo_config', 'tools') for p in (ROOT / d).rglob('*.py')
    ]
    found = [f'{p.relative_to(ROOT)}:{m.group(0)}' for p in files for m in TRACKER.finditer(p.read_text())]
    found = [f for f in found if 'benchmarks/docs.py' not in f]  # the checker's own pattern and its comment
    assert found == []


def test_no_tracker_words_in_help():
    for command, (module, *_) in hybrid_zoo_cli.COMMANDS.items():
        text = importlib.import_module(f'hybrid_zoo_cli.{module}').build_parser().format_help()
        assert not TRACKER.search(' '.join(text.split())), command
