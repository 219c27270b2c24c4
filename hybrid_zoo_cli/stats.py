"""``hybrid-zoo stats``: its command line, and the count (``hybrid_zoo.benchmarks.model_stats.collect``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybrid_zoo_config.outputs import unwritable_output


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo stats',
        description='Count params and GMACs (scaled_dot_product_attention included) of the nine models.',
    )
    p.add_argument('--img-size', type=int, default=224, help='square input side for the MAC count')
    p.add_argument(
        '--results',
        default='runs/stats',
        help='results folder (default: %(default)s; the committed model_cards/results only when named)',
    )
    p.add_argument('--out', default=None, help='results file to write (default: <results>/model_stats.json)')
    return p


def main(argv: list[str] | None = None) -> int:
    """Count, write the results file, and print one line per model."""
    args = build_parser().parse_args(argv)
    problem = unwritable_output(folders={'--results': None if args.out else args.results}, files={'--out': args.out})
    if problem:
        print(f'hybrid-zoo stats: {problem}', file=sys.stderr)
        return 2
    out = args.out or str(Path(args.results) / 'model_stats.json')
    from hybrid_zoo.atomic import write_json_atomic
    from hybrid_zoo.benchmarks.model_stats import collect

    result = collect((3, args.img_size, args.img_size))
    write_json_atomic(out, result)
    for name, row in result['models'].items():
        print(f'{name:24s} {row["params_m"]:7.2f}M {row["gmacs"]:6.3f} GMACs (attention {row["attention_gmacs"]:.3f})')
    print('placement spread by size:', result['flop_spread_by_size'])
    print(f'wrote {out}')
    return 0
