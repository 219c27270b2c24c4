"""``hybrid-zoo push``: its command line, and the upload (``hybrid_zoo.hub.client.push``)."""

from __future__ import annotations

import argparse
import sys

from hybrid_zoo_config.fields import add_verbosity_flags, verbosity_of


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
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Push (or, with ``--dry-run``, list what would be pushed); one line on stderr and 2 for a bad folder or repo id,
    1 when the Hub refuses or cannot be reached."""
    args = build_parser().parse_args(argv)
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), fmt='%(levelname)s %(name)s: %(message)s')
    from huggingface_hub.errors import HFValidationError

    from hybrid_zoo.hub.client import HubError, ModelLoadError, dry_run, push

    try:
        if args.dry_run:
            for path, (size, where) in dry_run(
                args.folder, args.repo_id, license=args.license, base_model=args.base_model
            ).items():
                print(f'{path:<20} {size:>12,d} bytes  {where}')
            return 0
        info = push(
            args.folder,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
            endpoint=args.endpoint,
            license=args.license,
            base_model=args.base_model,
        )
    except (ModelLoadError, HFValidationError) as e:  # the folder or the repo id: bad input
        print(f'hybrid-zoo push: {e}', file=sys.stderr)
        return 2
    except HubError as e:  # the Hub refused or could not be reached
        print(f'hybrid-zoo push: {e}', file=sys.stderr)
        return 1
    print(info.pr_url or info.commit_url)
    return 0
