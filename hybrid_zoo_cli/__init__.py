"""The ``hybrid-zoo`` command: one module of this package per sub-command, each with its parser and its ``main``.

A sub-command's ``main`` parses its arguments once, with the standard library alone (``--help``, usage errors and
bad values answer before torch is imported), then imports the library and calls it with plain arguments or a
configuration object (``hybrid_zoo_config``). ``import hybrid_zoo`` registers the models in timm, so nothing under
``hybrid_zoo`` starts quickly; the library never imports this package.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

# sub-command -> (module of this package that parses it and runs it, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('demo', 'run the main job end to end on the embedded default data'),
    'prepare-data': ('data', 'write Fashion-MNIST and scikit-learn digits as HF datasets'),
    'train': ('train', 'train or fine-tune a timm model with Accelerate on a HF dataset'),
    'eval': ('evaluate', 'evaluate a model on a dataset split (top-1/top-5, confusion matrix)'),
    'compare': ('compare', 'train several models under one recipe and test each (Fashion-MNIST)'),
    'push': ('push', 'publish a trained model folder to the Hugging Face Hub'),
    'hub-server': ('hub_server', 'run the local Hub-protocol server (offline demos and tests)'),
    'describe': ('describe', 'print the stages of a model with the shape, params and GMACs of each'),
    'stats': ('stats', 'count params and GMACs (attention included) into a results file'),
    'bench': ('bench', 'side-by-side CPU speed benchmark of timm models'),
    'profile': ('profile', 'where CPU time goes per kind of operation, and the ceiling it sets'),
    'front': ('front', 'the accuracy-speed front per deployment mode, from compare and bench results'),
    'export': ('export', 'export to ONNX and check parity with onnxruntime'),
    'render-docs': ('render', 'render README tables, plots and model cards from result files'),
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
    lines += [f'  {name:<{width}}  {help_}' for name, (_, help_) in COMMANDS.items()]
    lines += ['', "run 'hybrid-zoo <command> --help' for the options of one command"]
    return '\n'.join(lines)


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
    return int(importlib.import_module(f'{__name__}.{COMMANDS[name][0]}').main(rest) or 0)
