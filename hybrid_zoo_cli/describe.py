"""Command line of ``hybrid-zoo describe``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo describe',
        description='Print the stem, each stage (conv or attention blocks, how many, how wide) and the head of a '
        'registered ConvFormer model, with the tensor shape after each for one input, and the params and GMACs '
        '(attention counted) of each part.',
    )
    p.add_argument('model', help='a registered ConvFormer name, e.g. convformer_small')
    p.add_argument(
        '--img-size', type=int, nargs='+', default=[224], metavar='H [W]', help='input height and width (default: 224)'
    )
    p.add_argument('--in-chans', type=int, default=3, help='input channels (default: %(default)s)')
    return p
