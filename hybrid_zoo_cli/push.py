"""Command line of ``hybrid-zoo push``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo push',
        description='Publish a trained model folder to the Hugging Face Hub in one commit: model.safetensors, '
        "timm's config.json, a model card, results and training args (JSON + YAML), the log and the plots. "
        'The token comes from HF_TOKEN or `hf auth login`; it is never printed.',
    )
    p.add_argument('folder', help='training output folder (with model/) or the model/ folder itself')
    p.add_argument('repo_id', help="target repo 'namespace/name', by convention 'org/<architecture>.<tag>'")
    p.add_argument('--revision', default=None, help='branch to push to (created from main if missing; default main)')
    p.add_argument(
        '--private', action='store_true', help='create the repo private (an existing repo keeps its visibility)'
    )
    p.add_argument('--create-pr', action='store_true', help='open a pull request instead of committing to the branch')
    p.add_argument('--commit-message', default=None, help='commit title (default: architecture and top-1)')
    p.add_argument('--endpoint', default=None, help='Hub URL (default: $HF_ENDPOINT or https://huggingface.co)')
    p.add_argument('--license', default='apache-2.0', help='license id for the model card (default: %(default)s)')
    p.add_argument('--base-model', default=None, help='Hub id of the model this one was fine-tuned from')
    p.add_argument(
        '--dry-run',
        action='store_true',
        help='check the folder and list what would be uploaded, without contacting the Hub',
    )
    return p
