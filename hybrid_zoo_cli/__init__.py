"""The ``hybrid-zoo`` command: one sub-command per package module.

This package holds the command line (every sub-command's parser, and the run configurations those fill) and
imports neither torch nor timm: ``import hybrid_zoo`` registers the models in timm, so nothing under
``hybrid_zoo`` can start quickly, and ``hybrid-zoo --help`` or a mistyped flag should not wait for torch.
Each sub-command is parsed here first (help and usage errors answer at once), then its module's ``main``
runs with the same arguments.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

# sub-command -> (parser module in this package, module whose main() runs it, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    'demo': ('demo', 'hybrid_zoo.demo', 'run the main job end to end on the embedded default data'),
    'prepare-data': ('data', 'hybrid_zoo.train.data', 'write Fashion-MNIST and scikit-learn digits as HF datasets'),
    'train': ('train', 'hybrid_zoo.train.loop', 'train or fine-tune a timm model with Accelerate on a HF dataset'),
    'eval': (
        'evaluate',
        'hybrid_zoo.train.evaluate',
        'evaluate a model on a dataset split (top-1/top-5, confusion matrix)',
    ),
    'compare': (
        'compare',
        'hybrid_zoo.benchmarks.compare',
        'train several models under one recipe and test each (Fashion-MNIST)',
    ),
    'push': ('push', 'hybrid_zoo.hub.client', 'publish a trained model folder to the Hugging Face Hub'),
    'hub-server': (
        'hub_server',
        'hybrid_zoo_cli.hub_server',  # loads the server package alone: no torch, starts in 0.1 s
        'run the local Hub-protocol server (offline demos and tests)',
    ),
    'describe': (
        'describe',
        'hybrid_zoo.describe',
        'print the stages of a model with the shape, params and GMACs of each',
    ),
    'stats': (
        'stats',
        'hybrid_zoo.benchmarks.model_stats',
        'count params and GMACs (attention included) into a results file',
    ),
    'bench': ('bench', 'hybrid_zoo.benchmarks.speed', 'side-by-side CPU speed benchmark of timm models'),
    'profile': (
        'profile',
        'hybrid_zoo.benchmarks.profile',
        'where CPU time goes per kind of operation, and the ceiling it sets',
    ),
    'export': ('export', 'hybrid_zoo.export', 'export to ONNX and check parity with onnxruntime'),
    'render-docs': (
        'render',
        'hybrid_zoo.benchmarks.docs',
        'render README tables, plots and model cards from result files',
    ),
}


def package_version() -> str:
    """The installed distribution's version (``pyproject.toml``), without importing the package."""
    try:
        return version('hybrid_zoo')
    except PackageNotFoundError:  # a source checkout on PYTHONPATH, never installed
        return 'unknown (not installed)'


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ['usage: hybrid-zoo [--version] <command> [options]', '', 'commands:']
    lines += [f'  {name:<{width}}  {help_}' for name, (_, _, help_) in COMMANDS.items()]
    lines += ['', "run 'hybrid-zoo <command> --help' for the options of one command"]
    return '\n'.join(lines)


def parse(name: str, argv: list[str]):
    """Parse ``argv`` with sub-command ``name``'s parser (exits on ``--help`` or a usage error)."""
    module = importlib.import_module(f'{__name__}.{COMMANDS[name][0]}')
    if hasattr(module, 'parse_args'):  # bench: a preset supplies the defaults
        return module.parse_args(argv)
    return module.build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    if argv[0] == '--version':
        print(f'hybrid-zoo {package_version()}')
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f'hybrid-zoo: unknown command {name!r}; expected one of: {", ".join(COMMANDS)}', file=sys.stderr)
        return 2
    parse(name, rest)
    return int(importlib.import_module(COMMANDS[name][1]).main(rest) or 0)
