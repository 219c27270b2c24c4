"""``hybrid-zoo eval``: its command line, and the run (``hybrid_zoo.train.evaluate.evaluate``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from hybrid_zoo_config.data import EMBEDDED_CACHE, add_data_dir_refusal
from hybrid_zoo_config.fields import add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo eval`` parser."""
    parser = argparse.ArgumentParser(
        prog='hybrid-zoo eval',
        description='Evaluate an image classifier on a dataset split: top-1/top-5, per-class accuracy and a '
        'confusion-matrix PNG. Runs on N processes under `accelerate launch -m hybrid_zoo_cli eval ...`.',
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
    add_verbosity_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo eval``: 0 when done, 2 (one line on stderr) for a wrong model, dataset or split."""
    args = build_parser().parse_args(argv)
    problem = unwritable_output(folders={'--output-dir': args.output_dir})
    if problem:
        print(f'hybrid-zoo eval: {problem}', file=sys.stderr)
        return 2
    rank0 = int(os.environ.get('RANK', '0')) == 0
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), rank0=rank0)
    from hybrid_zoo.train.evaluate import USER_ERRORS, evaluate

    try:
        results = evaluate(
            args.model,
            args.dataset,
            args.split,
            dataset_config=args.dataset_config,
            image_column=args.image_column,
            label_column=args.label_column,
            batch_size=args.batch_size,
            workers=args.workers,
            max_samples=args.max_samples,
            img_size=args.img_size,
            output_dir=args.output_dir,
            mixed_precision=args.mixed_precision,
            cpu=args.cpu,
            embedded_cache=args.embedded_cache,
        )
    except USER_ERRORS as e:
        logger.error('%s', e)
        return 2
    if rank0:
        width = max(map(len, results['per_class']), default=0)
        for cls, acc in results['per_class'].items():
            logger.info('  %-*s %s', width, cls, 'n/a' if acc is None else f'{acc:6.2f}%')
        summary = {k: results[k] for k in ('model', 'dataset', 'split', 'num_samples', 'top1', 'top5', 'loss')}
        print(json.dumps(summary))
    return 0
