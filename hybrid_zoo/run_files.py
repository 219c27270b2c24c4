"""The names of the files and folders a training run writes and the other tiers read: the one home of the run layout.

The trainer writes them, ``hybrid-zoo eval`` adds its results, the Hub client pushes and the model cards read them,
and the comparisons find their runs by them; each of those imports the names from here (standard library only, so
every tier may). ``tests/test_run_files.py`` refuses a literal of one of these names anywhere else in the package.

Output directory of a training run (``--output-dir``; by default a new ``runs/train/<YYYYmmdd-HHMMSS>-<model>``)::

    <output_dir>/.hybrid_zoo_run.json  marks the folder as a run of this trainer (written before anything else)
    <output_dir>/checkpoints/last/     accelerate save_state + meta.json + manifest.json (sha256 of every file),
                                       replaced atomically every epoch
    <output_dir>/checkpoints/best/     the same, for the best validation top-1 so far
    <output_dir>/metrics.jsonl         one JSON line per epoch, rewritten atomically (the checkpoint keeps a copy)
    <output_dir>/logs/                 Accelerate trackers (--log-with)
    <output_dir>/model/                Hub-ready: config.json (timm save_for_hf), model.safetensors, results.json,
                                       train_args.json, training_curves.png, confusion_matrix.png
    <output_dir>/eval_results.json     ``hybrid-zoo eval --output-dir <output_dir>`` (with confusion_matrix.png); the
                                       model card counts it when it measured these weights (also inside ``model/``)
"""

from __future__ import annotations

__all__ = [
    'BEST',
    'CHECKPOINTS_DIR',
    'CHECKPOINT_META',
    'CONFIG_NAME',
    'CONFUSION_MATRIX',
    'EVAL_RESULTS',
    'LAST',
    'LOGS_DIR',
    'MANIFEST',
    'METRICS',
    'MODEL_DIR',
    'MODEL_FILES',
    'PICKLE_WEIGHTS_NAME',
    'PLOTS',
    'RESULTS',
    'RUN_MARKER',
    'TRAINING_CURVES',
    'TRAIN_ARGS',
    'WEIGHTS_NAME',
]

RUN_MARKER = '.hybrid_zoo_run.json'
CHECKPOINTS_DIR = 'checkpoints'
LAST = 'last'  # checkpoints/last: every epoch (and mid-epoch positions of a stream)
BEST = 'best'  # checkpoints/best: the best validation top-1 so far
CHECKPOINT_META = 'meta.json'  # in a checkpoint folder: epoch, history, the options a resume must keep
MANIFEST = 'manifest.json'  # in a checkpoint folder: size and sha256 of every file
METRICS = 'metrics.jsonl'
LOGS_DIR = 'logs'  # Accelerate trackers (--log-with)
MODEL_DIR = 'model'

# the model folder: timm's save_for_hf names, then what the trainer adds
CONFIG_NAME = 'config.json'
WEIGHTS_NAME = 'model.safetensors'
PICKLE_WEIGHTS_NAME = 'pytorch_model.bin'  # what save_for_hf also writes unless told not to; never kept
RESULTS = 'results.json'
TRAIN_ARGS = 'train_args.json'
TRAINING_CURVES = 'training_curves.png'
CONFUSION_MATRIX = 'confusion_matrix.png'
PLOTS = (TRAINING_CURVES, CONFUSION_MATRIX)
MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, RESULTS, TRAIN_ARGS, *PLOTS})  # all the trainer writes there

EVAL_RESULTS = 'eval_results.json'  # hybrid-zoo eval --output-dir
