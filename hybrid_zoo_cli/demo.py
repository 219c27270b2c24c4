"""Command line of ``hybrid-zoo demo``."""

from __future__ import annotations

import argparse

from .data import EMBEDDED_CACHE, add_data_dir_refusal


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo demo`` parser."""
    p = argparse.ArgumentParser(
        prog='hybrid-zoo demo',
        description='Prepare the embedded data, train (validating on a share carved out of the train split), '
        'evaluate on the untouched test split, publish to a local Hub server and load the model back with '
        'timm.create_model("hf-hub:...").',
    )
    p.add_argument('--model', default='convformer_tiny', help='timm model to train (any registered name)')
    p.add_argument('--epochs', type=int, default=2, help='training epochs')
    p.add_argument('--train-samples', type=int, default=6000, help='seeded training subset (0 = the whole split)')
    p.add_argument('--img-size', type=int, default=64, help='training and test resolution')
    p.add_argument('--batch-size', type=int, default=64, help='batch size')
    p.add_argument(
        '--embedded-cache', default=EMBEDDED_CACHE, help='folder where the embedded dataset is prepared (and reused)'
    )
    add_data_dir_refusal(p)
    p.add_argument('--output-dir', default='runs/demo', help='training output, evaluation and local Hub storage')
    p.add_argument('--repo-id', default=None, help='repo on the local Hub (default: demo/<model>.<dataset>_<size>)')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers')
    return p
