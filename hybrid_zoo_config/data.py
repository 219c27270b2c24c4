"""Where data lives by default, and the ``--data-dir`` refusal the train, eval, demo and compare commands share.

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
