"""Command line of ``hybrid-zoo eval``."""

from __future__ import annotations

import argparse

from .data import EMBEDDED_CACHE, add_data_dir_refusal


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo eval`` parser."""
    parser = argparse.ArgumentParser(
        prog='hybrid-zoo eval',
        description='Evaluate an image classifier on a dataset split: top-1/top-5, per-class accuracy and a '
        'confusion-matrix PNG. Runs on N processes under `accelerate launch -m hybrid_zoo.train.evaluate`.',
    )
    parser.add_argument(
        '--model',
        required=True,
        help="the model: a folder written by 'hybrid-zoo train' (<output_dir>/model), 'hf-hub:org/name', "
        "'local-dir:/path', or a registry name with a tag ('convformer_tiny.fmnist_64')",
    )
    parser.add_argument(
        '--dataset',
        default='default',
        help='the data: a save_to_disk folder, an imagefolder directory, parquet file(s) or glob, a Hub dataset id, '
        "or 'default' (the embedded Fashion-MNIST/digits; default)",
    )
    parser.add_argument('--dataset-config', default=None, help='configuration name of a Hub dataset')
    parser.add_argument('--split', default='test', help='split to evaluate (default: test)')
    parser.add_argument('--image-column', default=None, help='image column (default: detected)')
    parser.add_argument('--label-column', default=None, help='label column (default: detected)')
    parser.add_argument('--batch-size', type=int, default=128, help='batch size per process (default: 128)')
    parser.add_argument('--workers', type=int, default=2, help='DataLoader worker processes (default: 2)')
    parser.add_argument('--max-samples', type=int, default=None, help='evaluate a seeded random subset of this size')
    parser.add_argument('--img-size', type=int, default=None, help="input resolution (default: the model's own)")
    parser.add_argument(
        '--output-dir', default=None, help='write eval_results.json and confusion_matrix.png into this folder'
    )
    parser.add_argument(
        '--mixed-precision',
        choices=('no', 'bf16', 'fp16'),
        default=None,
        help='autocast dtype (default: the accelerate launch setting, else no)',
    )
    parser.add_argument('--cpu', action='store_true', help='run on CPU even when a GPU is present')
    parser.add_argument(
        '--embedded-cache',
        default=EMBEDDED_CACHE,
        help=f'folder where --dataset default (the embedded data) is prepared when missing (default: {EMBEDDED_CACHE})',
    )
    add_data_dir_refusal(parser)
    return parser
