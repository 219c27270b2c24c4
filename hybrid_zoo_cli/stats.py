"""Command line of ``hybrid-zoo stats``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo stats',
        description='Count params and GMACs (scaled_dot_product_attention included) of the nine models.',
    )
    p.add_argument('--img-size', type=int, default=224, help='square input side for the MAC count')
    p.add_argument('--results', default='model_cards/results', help='results folder (default: %(default)s)')
    p.add_argument('--out', default=None, help='results file to write (default: <results>/model_stats.json)')
    return p
