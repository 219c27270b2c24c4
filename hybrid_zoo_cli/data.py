"""Command line of ``hybrid-zoo prepare-data``, and the data flags the train, eval and demo commands share.

``--data-dir`` is refused everywhere: in timm's ``train.py`` it is the dataset root, while here the data is named by
``--dataset`` and the embedded demo data is cached under ``--embedded-cache``. Guessing either meaning would
silently do the wrong thing for the other half of the users (train on the embedded data, or write it into their
image folder), so the flag fails at once and says which one to use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FASHION_MNIST_DIR = Path('/usr/share/datasets/fashion-mnist')  # Debian package dataset-fashion-mnist
EMBEDDED_CACHE = 'data'  # where --dataset default is prepared; never a user's data folder
PREPARE_CHOICES = ('all', 'fashion-mnist', 'digits', 'default')
SHARD_FORMATS = ('parquet', 'webdataset')
DATA_DIR_REFUSED = (
    '--data-dir is not an option of this command (in timm it is the dataset root): give your own data with '
    '--dataset FOLDER (an imagefolder directory, a save_to_disk folder, parquet files or a Hub id org/name); '
    '--embedded-cache FOLDER sets where the embedded demo data is cached'
)


class _RefuseDataDir(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(DATA_DIR_REFUSED)


def add_data_dir_refusal(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--data-dir``, which fails at once with a usage error naming ``--dataset`` and ``--embedded-cache``."""
    parser.add_argument(
        '--data-dir',
        nargs='?',
        action=_RefuseDataDir,
        default=argparse.SUPPRESS,
        metavar='FOLDER',
        help='not accepted (timm users: your data goes to --dataset FOLDER; the embedded data cache is '
        '--embedded-cache FOLDER)',
    )


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
        help='push the shard folder as a dataset repo to the Hub ($HF_ENDPOINT, token from $HF_TOKEN or the login)',
    )
    g.add_argument('--private', action='store_true', help='create the pushed dataset repo private')
    return parser
