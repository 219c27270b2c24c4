"""``hybrid-zoo profile``: its command line, and the run (``hybrid_zoo.benchmarks.profile.run_profile``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hybrid_zoo_config.fields import add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo profile',
        description='Where CPU inference time goes, per kind of operation (GEMM, depthwise, attention, activations, '
        'rest), and the ceiling that puts on the share of the 1x1-conv rate a model can reach.',
    )
    p.add_argument(
        '--models',
        nargs='+',
        default=None,
        help='timm model names (default: our nine and the CoAtNet, ConvNeXt and CAFormer peers)',
    )
    p.add_argument('--batch-size', type=int, default=32, help='inference batch (default: %(default)s)')
    p.add_argument('--img-size', type=int, default=224, help='square input side (default: %(default)s)')
    p.add_argument('--iters', type=int, default=4, help='timed forwards per model (median; default: %(default)s)')
    p.add_argument(
        '--train',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='also profile a training step (default: on)',
    )
    p.add_argument(
        '--train-batch-size', type=int, default=16, help="training step batch (the benchmark's, %(default)s)"
    )
    p.add_argument('--train-iters', type=int, default=3, help='timed training steps per model (median; %(default)s)')
    p.add_argument(
        '--bench',
        default=None,
        help="the benchmark's results, whose target ratios the verdicts start from where it has them; a missing "
        "file means the profile's own (default: model_cards/results/bench-cpu.json, the committed bench)",
    )
    p.add_argument(
        '--results',
        default='runs/profile',
        help='results folder (default: %(default)s; the committed model_cards/results only when named)',
    )
    p.add_argument('--out', default=None, help='results file (default: <results>/profile-cpu.json)')
    p.add_argument(
        '--report-only',
        action='store_true',
        help='re-check the targets against --bench and re-render the table and plot from --out; measure nothing',
    )
    add_verbosity_flags(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hybrid-zoo profile`` (re-started with the benchmark's allocator setting) and print its table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # the results file, and the table and plot written beside it
    problem = unwritable_output(folders={'--results': None if args.out else args.results}, files={'--out': args.out})
    if problem:
        print(f'hybrid-zoo profile: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.benchmarks.peers import PROFILE_MODELS
    from hybrid_zoo.benchmarks.profile import run_profile
    from hybrid_zoo.benchmarks.profile_report import rerender
    from hybrid_zoo.benchmarks.speed import exec_with_no_trim

    bench = args.bench or 'model_cards/results/bench-cpu.json'
    out = Path(args.out or Path(args.results) / 'profile-cpu.json')
    if args.report_only:  # nothing measured: no allocator setting needed
        rerender(out, Path(bench))
        print(out.with_suffix('.md').read_text())
        return 0
    exec_with_no_trim(['-m', 'hybrid_zoo_cli', 'profile', *argv])  # the benchmark's allocator setting
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), fmt='%(message)s')
    run_profile(
        args.models or list(PROFILE_MODELS),
        out,
        bench,
        batch_size=args.batch_size,
        img_size=args.img_size,
        iters=args.iters,
        train=args.train,
        train_batch_size=args.train_batch_size,
        train_iters=args.train_iters,
    )
    print(out.with_suffix('.md').read_text())
    return 0
