"""Training tier (``pip install 'hybrid_zoo[train]'``): the Accelerate training loop, HF ``datasets`` input,
the embedded datasets, evaluation and plots.

``python -m hybrid_zoo.train`` (and ``accelerate launch -m hybrid_zoo.train``) runs the trainer; ``TrainConfig``
and its command line live in ``hybrid_zoo_config.train`` (no torch there, so ``--help`` is instant).
"""

from hybrid_zoo_config.train import TrainConfigError

from .loop import (
    CheckpointError,
    NonFiniteLossError,
    OutputDirError,
    ResumeMismatchError,
    TrainConfig,
    fit,
    launch,
)

__all__ = [
    'CheckpointError',
    'NonFiniteLossError',
    'OutputDirError',
    'ResumeMismatchError',
    'TrainConfig',
    'TrainConfigError',
    'fit',
    'launch',
]
