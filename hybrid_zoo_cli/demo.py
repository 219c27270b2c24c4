"""``hybrid-zoo demo``: its command line, and the run (``hybrid_zoo.demo.run_demo``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hybrid_zoo_config.data import EMBEDDED_CACHE, add_data_dir_refusal
from hybrid_zoo_config.fields import add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo demo`` parser."""
    p = argparse.ArgumentParser(
        prog='hybrid-zoo demo',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every flag's default in --help
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
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo demo``: 0 when the model loaded back from the local Hub is bit-identical, else 1."""
    args = build_parser().parse_args(argv)
    problem = unwritable_output(folders={'--output-dir': args.output_dir})
    if problem:
        print(f'hybrid-zoo demo: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), fmt='%(asctime)s %(name)s: %(message)s')
    from hybrid_zoo.demo import run_demo

    try:
        summary = run_demo(
            args.model,
            epochs=args.epochs,
            train_samples=args.train_samples,
            img_size=args.img_size,
            batch_size=args.batch_size,
            embedded_cache=args.embedded_cache,
            output_dir=args.output_dir,
            repo_id=args.repo_id,
            workers=args.workers,
        )
    except RuntimeError as e:
        print(f'hybrid-zoo demo: {e}', file=sys.stderr)
        return 1
    model_dir = Path(summary.pop('model_dir'))
    print(json.dumps(summary, indent=2))
    name = summary['repo_id'].split('/')[1]
    print(
        '\nOn the real Hub the same two steps are:\n'
        f'  hybrid-zoo push {model_dir.parent} <your-org>/{name}\n'
        f'  python -c "import hybrid_zoo, timm; timm.create_model(\'hf-hub:<your-org>/{name}\', pretrained=True)"'
    )
    return 0 if summary['weights_bit_identical'] and summary['logits_bit_identical'] else 1
