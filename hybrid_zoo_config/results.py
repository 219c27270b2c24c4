"""Where measurements go: a user's runs under ``runs/``; the committed results only when named.

Every measuring command and tool writes under :data:`RUNS_DIR` unless its output is named on the command line, so
running a documented command never rewrites ``model_cards/results/`` (the files the README, docs and cards are
rendered from); a maintainer refreshing one names it (``--results model_cards/results/...``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# both relative to the working directory (the repository root for the commands that measure): an installed copy of
# the package never writes into site-packages
RESULTS_DIR = Path('model_cards') / 'results'
RUNS_DIR = Path('runs')
TRAIN_RUNS = RUNS_DIR / 'train'  # where a training run without --output-dir gets its own folder


def tool_parser(doc: str, filename: str) -> argparse.ArgumentParser:
    """The command line of a measuring tool in ``tools/``: its docstring as help, and ``--out``, the results file
    (default ``runs/<filename>``; the committed ``model_cards/results/<filename>`` only when named)."""
    summary, _, rest = doc.strip().partition('\n\n')
    p = argparse.ArgumentParser(description=summary, epilog=rest, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        '--out',
        type=Path,
        default=RUNS_DIR / filename,
        help=f'results file (default: %(default)s; the committed one is {RESULTS_DIR / filename}, written only when '
        'named here)',
    )
    return p
