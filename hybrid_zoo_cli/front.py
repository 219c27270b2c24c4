"""``hybrid-zoo front``: the accuracy-speed front of a size from three results files
(``hybrid_zoo.benchmarks.front.write_front``): a compare results file (yardstick top-1, paired seeds), a bench results
file measured with ``--modes`` (per-round ranges) and, for the int8 modes, ``export --int8 --record`` records."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybrid_zoo_config.outputs import unwritable_output
from hybrid_zoo_config.results import RUNS_DIR

MODES = ('eager', 'compiled', 'int8-pt2e')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo front',
        description='Place every model of a comparison on the accuracy-speed front of each deployment mode: which '
        'model is dominated (slower beyond both per-round ranges and less accurate by more than two standard errors '
        'of the paired difference) and by whom, which pairs the measurements leave open; a table (.md), the summary '
        '(.json) and one plot per mode (.png).',
    )
    p.add_argument('--accuracy', required=True, help='a `hybrid-zoo compare` results file (yardstick top-1 per seed)')
    p.add_argument('--speed', required=True, help='a `hybrid-zoo bench --modes ...` results file')
    p.add_argument(
        '--int8',
        default=None,
        help="`hybrid-zoo export --int8 --evaluate-split test --record` records: each model's int8 top-1 change, "
        'applied to its seeds in the int8 modes (without it, int8 points carry their fp32 accuracy)',
    )
    p.add_argument(
        '--modes', nargs='+', default=list(MODES), choices=MODES, help='modes to place (default: %(default)s)'
    )
    p.add_argument(
        '--results',
        default=str(RUNS_DIR / 'front'),
        help='folder to write into (default: %(default)s; the committed model_cards/results only when named)',
    )
    p.add_argument('--name', default='front-tiny', help='file name stem (default: %(default)s)')
    p.add_argument('--title', default='Accuracy-speed front, tiny size', help='page title (default: %(default)s)')
    return p


def main(argv: list[str] | None = None) -> int:
    """Write the front; print one line per mode naming the models on it. Exit 2 (one line) for a missing or unusable
    results file."""
    args = build_parser().parse_args(argv)
    for flag, path in (('--accuracy', args.accuracy), ('--speed', args.speed), ('--int8', args.int8)):
        if path is not None and not Path(path).is_file():
            print(f'hybrid-zoo front: {flag} {path}: no such file; expected a results file', file=sys.stderr)
            return 2
    problem = unwritable_output(folders={'--results': args.results})
    if problem:
        print(f'hybrid-zoo front: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.benchmarks.front import left_open, write_front

    try:
        summary = write_front(
            args.accuracy, args.speed, args.results, int8=args.int8, name=args.name, title=args.title, modes=args.modes
        )
    except (ValueError, KeyError, TypeError) as e:  # a file of another kind, or measured without the modes asked for
        print(f'hybrid-zoo front: {e}', file=sys.stderr)
        return 2
    for mode in args.modes:
        f = summary[mode]
        on = [p['model'] for p in f['points'] if p['model'] not in f['dominated_by']]
        print(
            f'{mode}: {len(f["points"])} models, dominated by none: {", ".join(on) or "none"} '
            f'({left_open(f["pairs"])} of {len(f["pairs"])} pairs left open by the rule)'
        )
    print(f'wrote {Path(args.results) / args.name}.json, .md and one .png per mode')
    return 0
