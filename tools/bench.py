"""Side-by-side CPU benchmark: the same as ``hybrid-zoo bench`` (see ``--help``), runnable from a checkout.

The comparison of the bench issue (our nine and every built-in peer set, fp32, batch 32 at 224 px, 3 rounds)::

    python tools/bench.py --peers all --rounds 3
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout works without `pip install -e .`

from hybrid_zoo.benchmarks.speed import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main())
