"""``hybrid-zoo bench``: presets, the command line generated from ``BenchConfig``, and the run."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from hybrid_zoo_config.bench import LAYOUTS, PEER_SIZES, BenchConfig, H, W, allocator_label
from hybrid_zoo_config.fields import add_dataclass_arguments, add_verbosity_flags, config_from_namespace, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output

__all__ = ['LAYOUTS', 'PRESETS', 'build_parser', 'config_from_args', 'main', 'parse_args']

PRESETS: dict[str, dict[str, Any]] = {
    'cpu': {},
    # tools/gpu_bench.py: one round (GPU timings are stable), batch 256 bf16, eager and compiled, <= 5 minutes
    'gpu': {
        'device': 'cuda',
        'amp': 'bf16',
        'batch_size': 256,
        'rounds': 1,
        'warmup': 5,
        'iters': 20,
        'latency_warmup': 5,
        'latency_iters': 20,
        'compile': True,
        'train': False,
        'reference_batch': 256,
        'reference_mm_size': 8192,
        'reference_iters': 20,
        'jobs': 4,
        'time_budget': 250.0,
        'worker_timeout': 240.0,
        'name': 'bench-gpu',
    },
}


def build_parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(
        prog='hybrid-zoo bench',
        description='Measure timm models side by side in one process tree: params, GMACs (attention counted), '
        'inference images/s and batch-1 latency in NCHW and channels_last, training images/s, peak memory, '
        'optionally torch.compile, and the machine reference GEMM rates; writes JSON, CSV, a markdown table and a '
        'plot, and checks the performance targets against CoAtNet, ConvNeXt and CAFormer. Each (model, round) runs in a fresh worker process started with '
        f'{allocator_label(d)}, so glibc keeps freed memory and a result does not depend on what ran before.',
        epilog='The whole comparison: hybrid-zoo bench --peers all (about 30 min on 2 cores).',
    )
    g = p.add_argument_group('models')
    g.add_argument(
        '--models', nargs='+', default=[], metavar='NAME', help='timm model names; without it, our nine models'
    )
    g.add_argument('--family', action='store_true', help='add our nine models to --models')
    g.add_argument(
        '--peers',
        nargs='+',
        default=[],
        choices=[*PEER_SIZES, 'all'],
        help='built-in peer sets to add, by size class (the models: hybrid_zoo/benchmarks/peers.py, or '
        'docs/performance.md)',
    )
    groups = {W: p.add_argument_group(W), H: p.add_argument_group(H)}
    add_dataclass_arguments(p, BenchConfig, groups)
    g = groups[H]
    g.add_argument(
        '--preset',
        choices=list(PRESETS),
        default='cpu',
        help='defaults to start from (%(default)s); gpu = ' + ', '.join(f'{k} {v}' for k, v in PRESETS['gpu'].items()),
    )
    g = p.add_argument_group('output')
    g.add_argument(
        '--results',
        '--out-dir',
        dest='out_dir',
        default='runs/bench',
        help='folder for the result files (%(default)s; the committed model_cards/results only when named)',
    )
    g.add_argument('--name', default='bench-cpu', help='file stem: NAME.json, .csv, .md, .png (%(default)s)')
    g.add_argument(
        '--top1-csv',
        help="CSV with columns model,top1 (timm's results-imagenet.csv works): adds a "
        'top-1 column and an images/s vs top-1 plot',
    )
    g.add_argument(
        '--report-only',
        metavar='JSON',
        help='re-render the table, CSV and plot from a saved result file instead of measuring',
    )
    add_verbosity_flags(p)
    return p  # fmt: skip


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` on top of the chosen ``--preset``'s defaults."""
    p = build_parser()
    known, _ = p.parse_known_args([a for a in argv or () if a not in ('-h', '--help')])  # help shows the preset
    p.set_defaults(**PRESETS[known.preset])
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    return config_from_namespace(BenchConfig, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hybrid-zoo bench``: 0 when every model measured, 1 when one failed, 2 for bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    problem = unwritable_output(folders={'--results': args.out_dir})
    if problem:
        print(f'hybrid-zoo bench: {problem}', file=sys.stderr)
        return 2
    missing = [m for m in ('tqdm', 'matplotlib') if importlib.util.find_spec(m) is None]
    if missing:  # checked before measuring: the plot is drawn after a run that may take half an hour
        print(f'hybrid-zoo bench needs {" and ".join(missing)}: pip install "hybrid_zoo[bench]"', file=sys.stderr)
        return 2
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args))
    from pathlib import Path

    from hybrid_zoo.atomic import read_json, write_json_atomic
    from hybrid_zoo.benchmarks import speed_report
    from hybrid_zoo.benchmarks.speed import measure, resolve_models

    out_dir = Path(args.out_dir)
    json_path = out_dir / f'{args.name}.json'
    try:
        if args.report_only:
            doc = speed_report.refresh(read_json(args.report_only))
        else:
            config = config_from_args(args)
            models = resolve_models(args.models, family=args.family, peers=args.peers)
            logging.getLogger(__name__).info(
                '%d model(s) x %d round(s), %d threads, allocator: %s',
                len(models), config.rounds, config.threads, allocator_label(config),
            )  # fmt: skip
            doc = measure(
                models,
                config,
                progress=not args.quiet,
                on_update=lambda d: write_json_atomic(json_path, d),
                command='hybrid-zoo bench ' + shlex.join(argv),
            )
        paths = speed_report.write_outputs(doc, out_dir, args.name, top1_csv=args.top1_csv)
    except (ValueError, FileNotFoundError) as e:
        print(f'hybrid-zoo bench: {e}', file=sys.stderr)
        return 2
    # the measurements; the project's own speed targets stay in the results file, for its maintainers
    print(speed_report.render_markdown({**doc, 'targets': []}))
    for path in paths:
        print(path)
    return 1 if doc['meta']['run'].get('failed') else 0
