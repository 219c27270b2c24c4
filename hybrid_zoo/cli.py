"""``python -m hybrid_zoo.cli``: the ``hybrid-zoo`` command (it lives in ``hybrid_zoo_cli``, which starts without torch)."""

from __future__ import annotations

import sys

from hybrid_zoo_cli import COMMANDS, main

__all__ = ['COMMANDS', 'main']

if __name__ == '__main__':
    sys.exit(main())
