"""Command line of ``hybrid-zoo describe``."""

from __future__ import annotations

import argparse

# describe runs one forward pass at the asked size: 32 px is the models' smallest input; at 1,024 px the attention
# of stride 8 already holds about 300 MB, and the next doublings need gigabytes
MIN_IMG_SIZE, MAX_IMG_SIZE = 32, 1024
MAX_IN_CHANS = 64


def bounded_int(flag: str, low: int, high: int, unit: str = ''):
    """An argparse ``type`` accepting integers from ``low`` to ``high``; the error names the flag, range and value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f'{flag}: expected an integer from {low} to {high}{unit}, got {text!r}')
        return value

    return parse


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
        type=bounded_int('--img-size', MIN_IMG_SIZE, MAX_IMG_SIZE, ' px'),
        nargs='+',
        default=[224],
        metavar='H [W]',
        help=f'input height and width, {MIN_IMG_SIZE} to {MAX_IMG_SIZE} px (default: 224)',
    )
    p.add_argument(
        '--in-chans',
        type=bounded_int('--in-chans', 1, MAX_IN_CHANS),
        default=3,
        help=f'input channels, 1 to {MAX_IN_CHANS} (default: %(default)s)',
    )
    return p
