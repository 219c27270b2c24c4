"""``hybrid-zoo describe``: its command line, and the table (``hybrid_zoo.describe``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from hybrid_zoo_config.describe import MAX_IMG_SIZE, MAX_IN_CHANS, MIN_IMG_SIZE
from hybrid_zoo_config.fields import IntRange


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo describe',
        description='Print the stem, each stage (conv or attention blocks, how many, how wide) and the head of a '
        'registered ConvFormer model, with the tensor shape after each for one input, and the params and GMACs '
        '(attention counted) of each part.',
    )
    p.add_argument('model', help='a registered ConvFormer name, e.g. convformer_small')
    p.add_argument(
        '--img-size',
        type=IntRange('--img-size', MIN_IMG_SIZE, MAX_IMG_SIZE, ' px'),
        nargs='+',
        default=[224],
        metavar='H [W]',
        help=f'input height and width, {MIN_IMG_SIZE} to {MAX_IMG_SIZE} px (default: 224)',
    )
    p.add_argument(
        '--in-chans',
        type=IntRange('--in-chans', 1, MAX_IN_CHANS),
        default=3,
        help=f'input channels, 1 to {MAX_IN_CHANS} (default: %(default)s)',
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table of ``hybrid-zoo describe``; 2 (one line on stderr) for an unknown model or a bad size."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.img_size) not in (1, 2):
        parser.error(f'--img-size takes H or H W, got {len(args.img_size)} values')
    import hybrid_zoo
    from hybrid_zoo.describe import describe, format_table

    if args.model not in hybrid_zoo.MODEL_NAMES:
        print(
            f'hybrid-zoo describe: expected one of {", ".join(hybrid_zoo.MODEL_NAMES)}, got {args.model!r}',
            file=sys.stderr,
        )
        return 2
    size = (args.img_size[0], args.img_size[-1])
    try:
        rows = describe(args.model, size, args.in_chans)
    except ValueError as e:
        print(f'hybrid-zoo describe: {e}', file=sys.stderr)
        return 2
    print(format_table(args.model, rows, size, args.in_chans))
    return 0
