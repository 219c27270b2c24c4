"""The ``hybrid-zoo`` command: one sub-command per package module.

Each sub-command lives in its own module with ``build_parser()`` and ``main(argv)``; the module is
imported only when its sub-command runs, so ``hybrid-zoo --help`` stays fast and needs no extras.
"""

from __future__ import annotations

import importlib
import sys

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('hybrid_zoo.demo', 'run the main job end to end on the embedded default data'),
    'prepare-data': ('hybrid_zoo.data', 'turn Fashion-MNIST / scikit-learn digits into HF datasets on disk'),
    'train': ('hybrid_zoo.train', 'train or fine-tune a timm model with Accelerate on a HF dataset'),
    'eval': ('hybrid_zoo.evaluate', 'evaluate a model on a dataset split (top-1/top-5, confusion matrix)'),
    'compare': ('hybrid_zoo.compare', 'train several models under one identical recipe and test each (Fashion-MNIST)'),
    'push': ('hybrid_zoo.hub', 'publish a trained model folder to the Hugging Face Hub'),
    'hub-server': ('hybrid_zoo.hub_server', 'run the local Hub-protocol server (offline demos and tests)'),
    'stats': ('hybrid_zoo.stats', 'count params and GMACs (attention included) into a results file'),
    'bench': ('hybrid_zoo.bench', 'side-by-side CPU speed benchmark of timm models'),
    'profile': ('hybrid_zoo.profile', 'where CPU inference time goes per kind of operation, and the ceiling it sets'),
    'export': ('hybrid_zoo.export', 'export to ONNX and check parity with onnxruntime'),
    'render-docs': ('hybrid_zoo.render', 'render README tables, plots and model cards from result files'),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ['usage: hybrid-zoo <command> [options]', '', 'commands:']
    lines += [f'  {name:<{width}}  {help_}' for name, (_, help_) in COMMANDS.items()]
    lines += ['', "run 'hybrid-zoo <command> --help' for the options of one command"]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f'hybrid-zoo: unknown command {name!r}; expected one of: {", ".join(COMMANDS)}', file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == '__main__':
    sys.exit(main())
