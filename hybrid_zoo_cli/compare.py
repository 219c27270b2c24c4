"""``hybrid-zoo compare``: its command line, and the run (``hybrid_zoo.benchmarks.compare``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from hybrid_zoo_config.data import EMBEDDED_CACHE, add_data_dir_refusal
from hybrid_zoo_config.fields import KeyValueAction, add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output
from hybrid_zoo_config.results import RUNS_DIR
from hybrid_zoo_config.train import SEED_RANGE, SeedAction


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo compare',
        description='Train timm models under one identical recipe on Fashion-MNIST and test each on the '
        'untouched test split; resumable.',
    )
    p.add_argument(
        '--models', nargs='+', default=None, help='timm model names (default: our three tiny models and the tiny peers)'
    )
    p.add_argument(
        '--seeds', nargs='+', type=int, action=SeedAction, default=[0, 1], help=f'training seeds, each {SEED_RANGE}'
    )
    p.add_argument('--recipe', default='cpu64', help='the recipe, by name (listed in the error for an unknown one)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe epoch count')
    p.add_argument('--train-samples', type=int, default=None, help='override the recipe train subset (0 = all)')
    p.add_argument(
        '--embedded-cache', default=EMBEDDED_CACHE, help='folder where Fashion-MNIST is prepared (and reused)'
    )
    add_data_dir_refusal(p)
    p.add_argument('--work-dir', default='runs/compare', help='per-run output folders (checkpoints, weights)')
    p.add_argument(
        '--results',
        default=None,
        help='results file (default: runs/results/fmnist-<recipe>[-<variant>].json; the committed '
        'model_cards/results/... only when named). A run recorded in it is kept, not trained again',
    )
    p.add_argument(
        '--rerun', action='store_true', help='train the given (model, seed) runs again and replace their rows'
    )
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
        "results file) to the Hub as its registered tag '<org>/<model>.fmnist_64' and record it in pretrained.json "
        'beside the results file',
    )
    p.add_argument('--org', default=None, help="Hub namespace for --publish (default: the registry's, hybrid-zoo)")
    p.add_argument('--endpoint', default=None, help='Hub URL for --publish (default: $HF_ENDPOINT or huggingface.co)')
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo compare`` (then ``--publish``) and print each model's test top-1."""
    args = build_parser().parse_args(argv)
    # without --results the results file goes into RUNS_DIR/results, named after the recipe
    problem = unwritable_output(
        folders={'--work-dir': args.work_dir, '--results': None if args.results else RUNS_DIR / 'results'},
        files={'--results': args.results},
    )
    if problem:
        print(f'hybrid-zoo compare: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), fmt='%(message)s')
    from hybrid_zoo.benchmarks.compare import RECIPES, compare, publish
    from hybrid_zoo.benchmarks.peers import FMNIST_PEERS, FRONT_PEERS
    from hybrid_zoo.models.pretrained import FMNIST_MODELS
    from hybrid_zoo.train.data import prepare_fashion_mnist

    if args.recipe not in RECIPES:
        build_parser().error(f'--recipe: expected one of {", ".join(sorted(RECIPES))}, got {args.recipe!r}')
    recipe = RECIPES[args.recipe]
    # a changed recipe gets its own name, so its runs are never filed under the full recipe's
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.epochs, name=f'{recipe.name}-e{args.epochs}')
    if args.train_samples is not None:
        n = args.train_samples or 'all'
        recipe = dataclasses.replace(recipe, train_samples=args.train_samples or None, name=f'{recipe.name}-n{n}')
    dataset_dir = Path(args.embedded_cache) / 'fashion_mnist'
    if not (dataset_dir / 'dataset_dict.json').exists():
        prepare_fashion_mnist(dataset_dir)
    if args.model_kwargs and not args.variant:
        build_parser().error('--model-kwargs needs --variant (a name for the design change)')
    stem = f'fmnist-{recipe.name}' + (f'-{args.variant}' if args.variant else '')
    results = Path(args.results or RUNS_DIR / 'results' / f'{stem}.json')
    data = compare(
        args.models or [*(FRONT_PEERS if recipe.fit_peer_windows else FMNIST_PEERS), *FMNIST_MODELS],
        args.seeds,
        recipe,
        dataset_dir,
        args.work_dir,
        results,
        args.workers,
        args.report_only,
        model_kwargs=args.model_kwargs,
        variant=args.variant,
        rerun=args.rerun,
    )
    for model, s in data['summary'].items():
        print(f'{model:24s} test top-1 {s["mean"]:.2f} +- {s["std"]:.2f} (n={s["n"]}, {s["min"]:.2f}-{s["max"]:.2f})')
    print(f'ranking stable across seeds: {data["ranking_stable_across_seeds"]}')
    if args.publish:
        files = sorted(results.parent.glob('fmnist-*.json'))
        ours = [m for m in args.models if m in FMNIST_MODELS] if args.models else FMNIST_MODELS
        record = results.parent / 'pretrained.json'  # beside the results: the committed record only when named
        for tag, entry in publish(files, org=args.org, endpoint=args.endpoint, models=ours, record=record).items():
            print(f'published {tag}: {entry["repo_id"]}@{entry["commit"][:10]} (test top-1 {entry["test_top1"]:.2f})')
    return 0
