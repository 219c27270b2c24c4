"""Command line of ``hybrid-zoo profile``."""

from __future__ import annotations

import argparse


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
        "file means the profile's own (default: <results>/bench-cpu.json)",
    )
    p.add_argument('--results', default='model_cards/results', help='results folder (default: %(default)s)')
    p.add_argument('--out', default=None, help='results file (default: <results>/profile-cpu.json)')
    p.add_argument(
        '--report-only',
        action='store_true',
        help='re-check the targets against --bench and re-render the table and plot from --out; measure nothing',
    )
    return p
