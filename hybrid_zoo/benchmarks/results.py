"""Result files: the one home of every measured number (JSON under ``model_cards/results/``)."""

from __future__ import annotations

import datetime as _dt
import platform

import timm
import torch

from hybrid_zoo_config.results import RESULTS_DIR, RUNS_DIR  # noqa: F401  (their one home)


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

    return {
        'date': _dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d'),
        'cpu': cpu_name(),
        'threads': torch.get_num_threads(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'timm': timm.__version__,
    }


def current_rows(models: dict) -> dict:
    """A results file's ``{model: row}`` without the rows of an architecture that has changed since (a speed or an
    accuracy of v1 never stands next to a v2 model)."""
    from hybrid_zoo.models.variants import measured_on_current

    return {name: row for name, row in models.items() if measured_on_current(name, row)}
