"""``hybrid-zoo render-docs``: its command line, and the run (``hybrid_zoo.benchmarks.docs``)."""

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


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo render-docs``; with ``--check``, 1 when something is stale (and what), else 0."""
    args = build_parser().parse_args(argv)
    from hybrid_zoo.benchmarks.docs import render_all, stale_outputs

    if args.check:
        lines = stale_outputs(args.readme, args.results)
        for line in lines:
            print(line)
        return 1 if lines else 0
    for line in render_all(args.readme, args.results, figures=not args.no_figures):
        print(line)
    return 0
