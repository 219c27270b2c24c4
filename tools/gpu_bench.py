"""GPU benchmark: our nine models and the ``small`` peers at batch 256, AMP bf16, eager and torch.compile.

``hybrid-zoo bench --preset gpu`` with two conveniences for a machine lent for a few minutes: the output
goes to ``$OUT`` when that is set, and the peers are added only when ``--models`` is not given. The run
keeps to a time budget (``--time-budget``, 270 s): when the rest would not fit, compilation is dropped
first, then models; the result file is rewritten after every model, so a run cut short still reports.
Writes ``bench-gpu.json`` / ``.csv`` / ``.md`` / ``.png`` in the same format as the CPU benchmark, with the
GPU's name as ``meta.device``::

    python tools/gpu_bench.py --out-dir $OUT
    python tools/gpu_bench.py --device cpu --batch-size 2 --img-size 64 --models test_convnext --no-compile  # smoke
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout works without `pip install -e .`

from hybrid_zoo_cli.bench import main as bench_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = ['--preset', 'gpu']
    if os.environ.get('OUT'):
        defaults += ['--out-dir', os.environ['OUT']]  # a later --out-dir in argv wins
    if not any(a == '--models' or a.startswith('--models=') for a in argv):
        defaults += ['--peers', 'small']
    return bench_main([*defaults, *argv])


if __name__ == '__main__':
    sys.exit(main())
