"""Command line of ``hybrid-zoo compare``."""

from __future__ import annotations

import argparse

from .data import EMBEDDED_CACHE, add_data_dir_refusal
from .train import KeyValueAction


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo compare',
        description='Train timm models under one identical recipe on Fashion-MNIST and test each on the '
        'untouched test split; resumable.',
    )
    p.add_argument(
        '--models', nargs='+', default=None, help='timm model names (default: our three tiny models and the tiny peers)'
    )
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1], help='training seeds')
    p.add_argument('--recipe', default='cpu64', help='the recipe, by name (listed in the error for an unknown one)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe epoch count')
    p.add_argument('--train-samples', type=int, default=None, help='override the recipe train subset (0 = all)')
    p.add_argument(
        '--embedded-cache', default=EMBEDDED_CACHE, help='folder where Fashion-MNIST is prepared (and reused)'
    )
    add_data_dir_refusal(p)
    p.add_argument('--work-dir', default='runs/compare', help='per-run output folders (checkpoints, weights)')
    p.add_argument('--results', default=None, help='results file (default: model_cards/results/fmnist-<recipe>.json)')
    p.add_argument('--workers', type=int, default=2, help='DataLoader workers per run')
    p.add_argument('--report-only', action='store_true', help='summarise the finished runs only; train nothing')
    p.add_argument(
        '--model-kwargs',
        nargs='*',
        default={},
        action=KeyValueAction,
        metavar='KEY=VALUE',
        help='a design change applied to every model (constructor arguments, values parsed as Python literals); '
        'needs --variant',
    )
    p.add_argument(
        '--variant',
        default=None,
        help='name of the design variant: runs go to <work-dir>/<recipe>-<variant>, results to '
        'fmnist-<recipe>-<variant>.json',
    )
    p.add_argument(
        '--publish',
        action='store_true',
        help='afterwards, push the best 64 px run of each ConvFormer model (over every fmnist-*.json next to the '
        "results file) to the Hub as its registered tag '<org>/<model>.fmnist_64' and record it in pretrained.json",
    )
    p.add_argument('--org', default=None, help="Hub namespace for --publish (default: the registry's, hybrid-zoo)")
    p.add_argument('--endpoint', default=None, help='Hub URL for --publish (default: $HF_ENDPOINT or huggingface.co)')
    return p
