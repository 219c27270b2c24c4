"""Command line of ``hybrid-zoo render-docs``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo render-docs',
        description='Rewrite the generated README blocks, the placement diagram and the model cards '
        'from model_cards/results/.',
    )
    p.add_argument(
        '--readme', default=None, help='README to update in place; docs/*.md beside it too (default: README.md here)'
    )
    p.add_argument('--results', default=None, help='results directory (default: model_cards/results here)')
    p.add_argument('--check', action='store_true', help='change nothing; exit 1 if a README block is stale')
    p.add_argument('--no-figures', action='store_true', help='skip the diagram and the model cards')
    return p
