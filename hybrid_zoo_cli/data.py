"""``hybrid-zoo prepare-data``: its command line, and the run (``hybrid_zoo.train.data.prepare_data``)."""

from __future__ import annotations

import argparse
import logging
import sys

from hybrid_zoo_config.data import EMBEDDED_CACHE, FASHION_MNIST_DIR
from hybrid_zoo_config.fields import add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output

PREPARE_CHOICES = ('all', 'fashion-mnist', 'digits', 'default')
SHARD_FORMATS = ('parquet', 'webdataset')


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo prepare-data`` parser."""
    parser = argparse.ArgumentParser(
        prog='hybrid-zoo prepare-data',
        description='Write the embedded datasets (Fashion-MNIST from the Debian package dataset-fashion-mnist, '
        "scikit-learn's digits) as Hugging Face datasets on disk (save_to_disk), with Image() and ClassLabel columns: "
        '<out-dir>/fashion_mnist and <out-dir>/digits, each with train and test splits.',
    )
    parser.add_argument(
        '--which',
        '--dataset',
        dest='which',
        choices=PREPARE_CHOICES,
        default='all',
        help="which datasets: 'all' = Fashion-MNIST (when its Debian package is installed) and digits (default); "
        "'default' = only the one training uses for --dataset default (Fashion-MNIST, else digits)",
    )
    parser.add_argument(
        '--out-dir',
        default=EMBEDDED_CACHE,
        help=f'parent folder; each dataset goes to <out-dir>/<name> (default: {EMBEDDED_CACHE})',
    )
    parser.add_argument(
        '--fashion-mnist-dir',
        default=str(FASHION_MNIST_DIR),
        help=f'folder with the Fashion-MNIST IDX .gz files (default: {FASHION_MNIST_DIR})',
    )
    parser.add_argument('--overwrite', action='store_true', help='rebuild a dataset even if its folder already exists')
    g = parser.add_argument_group(
        'shards (for streaming)',
        'With --shards, each dataset is also written as sharded files that datasets streams, with a dataset card '
        'holding the class names and split sizes: <out-dir>/<name>-<format>/ (README.md, data/<split>-0000i-of-000n.*). '
        'hybrid-zoo train --streaming --dataset FOLDER_OR_REPO reads them.',
    )
    g.add_argument('--shards', choices=SHARD_FORMATS, help='write parquet or webdataset (.tar) shards')
    g.add_argument('--shard-size', type=int, default=1000, help='examples per shard (default: %(default)s)')
    g.add_argument(
        '--source',
        metavar='DATASET',
        help='shard this dataset instead of the embedded ones: an imagefolder directory, a save_to_disk folder, '
        'parquet files or a Hub id (what --dataset of hybrid-zoo train takes)',
    )
    g.add_argument(
        '--push-to',
        metavar='ORG/NAME',
        help='push the shard folder as a dataset repo to the Hub ($HF_ENDPOINT, token from $HF_TOKEN or the login); '
        'one dataset per repo: with it, --which names one dataset (fashion-mnist or digits) or --source gives it',
    )
    g.add_argument('--private', action='store_true', help='create the pushed dataset repo private')
    add_verbosity_flags(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo prepare-data``: prints each folder written; 2 (one line on stderr) for bad input."""
    args = build_parser().parse_args(argv)
    problem = unwritable_output(folders={'--out-dir': args.out_dir})
    if problem:
        print(f'hybrid-zoo prepare-data: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args))
    from hybrid_zoo.hub.client import HubError
    from hybrid_zoo.train.data import DataError, prepare_data

    try:
        written = prepare_data(
            args.which,
            args.out_dir,
            args.fashion_mnist_dir,
            overwrite=args.overwrite,
            shards=args.shards,
            shard_size=args.shard_size,
            source=args.source,
            push_to=args.push_to,
            private=args.private,
        )
    except (DataError, HubError) as e:
        logging.getLogger(__name__).error('%s', e)
        return 2
    for path in written:
        print(path)
    return 0
