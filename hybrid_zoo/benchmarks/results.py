"""Result files: the one home of every measured number (JSON under ``model_cards/results/``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import tempfile
from pathlib import Path

# relative to the working directory (the repository root for the commands that measure): an installed copy of
# the package never writes into site-packages
RESULTS_DIR = Path('model_cards') / 'results'


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_meta() -> dict:
    """Where and with what a number was measured."""
    import timm
    import torch

    return {
        'date': _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d'),
        'cpu': cpu_name(),
        'threads': torch.get_num_threads(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
    }


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file so that readers see the old one or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + '\n')


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def write_figure_atomic(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG (no software stamp, so unchanged plots stay byte-identical), atomically."""
    import io

    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=dpi, metadata={'Software': None})
    write_atomic(path, png.getvalue())
