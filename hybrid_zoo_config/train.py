"""The training configuration: ``TrainConfig`` holds every option of a run (``hybrid_zoo.train.fit`` takes one), which
options a resumed run must keep, and the command line generated from its fields (one help text per field), which
``hybrid-zoo train`` and ``python -m hybrid_zoo.train`` (what ``accelerate launch`` runs) share.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .data import EMBEDDED_CACHE, add_data_dir_refusal
from .fields import QUIET_HELP, VERBOSE_HELP, add_dataclass_arguments, config_from_namespace, option
from .outputs import unwritable_output
from .results import TRAIN_RUNS

__all__ = [
    'RESUME_MAY_CHANGE',
    'RESUME_MUST_MATCH',
    'TrainConfig',
    'TrainConfigError',
    'build_parser',
    'config_from_args',
]


SEED_MAX = 2**32 - 1  # the largest seed numpy's generators accept
SEED_RANGE = f'an integer in [0, {SEED_MAX}]'


def is_seed(value: object) -> bool:
    """Whether ``value`` seeds numpy's and torch's generators (accelerate's ``set_seed`` seeds both)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX


class SeedAction(argparse.Action):
    """Store a seed (or, with ``nargs``, a list of seeds) given as integers; one the generators cannot take is a usage
    error naming the flag, the range and the value, before anything runs."""

    def __call__(self, parser, namespace, values, option_string=None):
        for value in values if isinstance(values, list) else [values]:
            if not is_seed(value):
                parser.error(f'{option_string} must be {SEED_RANGE}, got {value}')
        setattr(namespace, self.dest, values)


class TrainConfigError(ValueError):
    """Options that cannot train: the message names each option, what it expects and what it was given."""


@dataclass
class TrainConfig:
    """Every training option. Field ``foo_bar`` is the command-line flag ``--foo-bar``; see ``hybrid-zoo train -h``."""

    # model
    model: str = option(
        'convformer_tiny', 'timm model name (any registered model; hybrid_zoo models included)', 'model'
    )
    pretrained: str | None = option(
        None,
        "start from pretrained weights: no value = the model's default tag; a tag ('fmnist_64') or 'arch.tag'; "
        "'hf-hub:org/name'; or a local folder in timm save_for_hf layout. The classifier is re-initialised when "
        '--num-classes differs, and the stem is adapted when --in-chans differs',
        'model',
        nargs='?',
        const='default',
        metavar='SOURCE',
    )
    num_classes: int | None = option(None, 'classifier width (default: the number of classes of the dataset)', 'model')
    in_chans: int | None = option(
        None, "input channels, 1 (grayscale) or 3 (default: the model's, usually 3); images are converted", 'model'
    )
    img_size: int | None = option(None, "training and validation resolution (default: the model's, e.g. 224)", 'model')
    drop_rate: float | None = option(
        None, "classifier dropout (default: the model's); timm's --drop", 'model', aliases=('--drop',)
    )
    drop_path_rate: float | None = option(None, "stochastic depth rate (default: the model's)", 'model')
    model_kwargs: dict = option(
        {}, 'extra model constructor arguments, KEY=VALUE (values parsed as Python literals)', 'model'
    )
    grad_checkpointing: bool = option(False, 'gradient checkpointing (less memory, more compute)', 'model')
    channels_last: bool = option(
        False, 'channels_last memory format (faster convolutions on CPU and recent GPUs)', 'model'
    )
    compile: bool = option(False, 'torch.compile the model (inductor; via Accelerate)', 'model')

    # data
    dataset: str = option(
        'default',
        'the data: a save_to_disk folder, an imagefolder directory, parquet file(s) or glob, a Hub dataset id '
        "(org/name), or 'default' = embedded Fashion-MNIST (or digits), prepared under --embedded-cache when missing",
        'data',
    )
    dataset_config: str | None = option(None, 'configuration name of a Hub dataset', 'data')
    train_split: str = option('train', 'split to train on', 'data')
    val_split: str | None = option(
        None,
        'validation split, which picks the best checkpoint and the EMA (default: validation/valid/val if present, '
        "else --val-fraction carved from the train split; never 'test' unless asked: --val-split test validates on "
        'the test split, and its numbers are then no held-out test score)',
        'data',
    )
    val_fraction: float = option(
        0.1,
        'share of the train split held out (stratified by label, seeded by --seed) when there is no val split',
        'data',
    )
    image_column: str | None = option(None, 'image column (default: detected, an Image() feature)', 'data')
    label_column: str | None = option(None, 'label column (default: detected, a ClassLabel or an int column)', 'data')
    max_train_samples: int | None = option(
        None, 'train on a seeded random subset of this many rows (quick runs)', 'data'
    )
    max_val_samples: int | None = option(None, 'validate on a seeded random subset of this many rows', 'data')
    embedded_cache: str = option(
        EMBEDDED_CACHE,
        f'folder where --dataset default (the embedded Fashion-MNIST/digits) is prepared when missing (default: '
        f'{EMBEDDED_CACHE}); nothing else is ever written into a data folder',
        'data',
    )
    streaming: bool = option(
        False,
        'stream the data instead of loading it whole (datasets streaming=True): parquet or webdataset shards from a '
        'Hub dataset repo or a local folder, read as training goes, each process reading its own shards. Chosen '
        'automatically for webdataset (.tar) shards and for Hub dataset repos of more than 8 GiB',
        'data',
    )
    samples_per_epoch: int | None = option(
        None,
        'streamed data: examples per epoch, all processes together (default: the train split size from the '
        'dataset card, less the validation share)',
        'data',
    )
    shuffle_buffer: int = option(10_000, 'streamed data: examples in the shuffle buffer of each data slot', 'data')
    workers: int = option(
        2, "DataLoader worker processes per training process (0 = load in the main process); timm's -j", 'data',
        aliases=('-j',),
    )  # fmt: skip

    # augmentation and regularisation
    no_aug: bool = option(False, 'no training augmentation: only resize, crop and normalise', 'augmentation')
    scale: tuple[float, float] = option(
        (0.08, 1.0), 'RandomResizedCrop area range', 'augmentation', metavar=('MIN', 'MAX')
    )
    hflip: float = option(0.5, 'horizontal flip probability', 'augmentation')
    color_jitter: float = option(0.4, 'colour jitter strength (ignored with --aa)', 'augmentation')
    aa: str | None = option(
        None,
        "auto augmentation: a timm policy such as 'rand-m9-mstd0.5-inc1' (RandAugment) or 'augmix-m5-w4-d2', or "
        "'trivialaugment' (one op at a uniformly sampled magnitude: timm 'rand-n1-mstd101-inc1-p1.0')",
        'augmentation',
    )
    reprob: float = option(0.0, 'random erasing probability', 'augmentation')
    mixup: float = option(0.0, 'mixup alpha (0 = off); with mixup or cutmix the loss uses soft targets', 'augmentation')
    cutmix: float = option(0.0, 'cutmix alpha (0 = off)', 'augmentation')
    mixup_prob: float = option(1.0, 'probability of applying mixup or cutmix to a batch', 'augmentation')
    mixup_switch_prob: float = option(0.5, 'probability of cutmix instead of mixup when both are on', 'augmentation')
    smoothing: float = option(0.1, 'label smoothing', 'augmentation')

    # optimisation
    epochs: int = option(10, 'training epochs (the cosine schedule spans them)', 'optimisation')
    batch_size: int = option(
        64,
        'batch size per process (global batch = this x processes x --grad-accum-steps)',
        'optimisation',
        aliases=('-b',),
    )
    eval_batch_size: int | None = option(
        None, 'validation batch size per process (default: 2 x --batch-size)', 'optimisation'
    )
    grad_accum_steps: int = option(1, 'gradient accumulation steps per optimizer update', 'optimisation')
    opt: str = option('adamw', 'timm optimizer name (create_optimizer_v2): adamw, sgd, lamb, lion, ...', 'optimisation')
    lr: float = option(1e-3, 'peak learning rate', 'optimisation')
    weight_decay: float = option(
        0.05, 'weight decay (not applied to norms, biases and no_weight_decay() params)', 'optimisation'
    )
    momentum: float = option(0.9, 'momentum of SGD-style optimizers', 'optimisation')
    layer_decay: float | None = option(
        None, "layer-wise lr decay (needs the model's group_matcher), e.g. 0.75", 'optimisation'
    )
    clip_grad: float | None = option(None, 'clip the gradient norm to this value (default: off)', 'optimisation')
    sched: str = option('cosine', 'timm schedule (create_scheduler_v2), stepped per optimizer update', 'optimisation')
    warmup_epochs: float = option(1.0, 'linear warmup length in epochs (fractions allowed)', 'optimisation')
    warmup_lr: float = option(1e-5, 'learning rate at the start of warmup', 'optimisation')
    min_lr: float = option(1e-6, 'learning rate at the end of the schedule', 'optimisation')
    mixed_precision: str | None = option(
        None,
        'autocast: no, bf16 or fp16 (default: the accelerate launch setting, else no). On CPU only bf16 does '
        'anything, and is usually slower',
        'optimisation',
        choices=('no', 'bf16', 'fp16'),
    )
    ema: bool = option(
        False, "keep an EMA of the weights (timm ModelEmaV3), evaluated every epoch too; timm's --model-ema",
        'optimisation', aliases=('--model-ema',),
    )  # fmt: skip
    ema_decay: float = option(0.9998, 'EMA decay', 'optimisation')
    ema_warmup: bool = option(True, 'ramp the EMA decay up from 0 (useful for short runs)', 'optimisation')
    seed: int = option(
        42,
        f'random seed (model init, data order, augmentation), {SEED_RANGE}; runs with equal seeds are identical',
        'optimisation',
        action=SeedAction,
    )

    # run
    output_dir: str | None = option(
        None,
        "output folder (default: a new one per run, runs/train/<YYYYmmdd-HHMMSS>-<model>, as timm's train.py does; "
        'with --resume auto, the newest run of this model there that holds a checkpoint). It must be new, empty, or '
        'a folder this trainer wrote before: a non-empty folder of other files is refused, files the trainer did not '
        'write are never deleted, and a folder holding an earlier run is refused unless --resume continues it or '
        '--overwrite replaces it. A run that fails before its first step removes the folder it made',
        'run',
    )
    overwrite: bool = option(
        False,
        'start afresh in an --output-dir that holds an earlier run, replacing its checkpoints and model folder',
        'run',
    )
    resume: str | None = option(
        None,
        "resume from a checkpoint folder, or 'auto' = <output_dir>/checkpoints/last if it exists. Refused when the "
        'model, the data or any option that changes what the run computes (lr, epochs, schedule, optimizer, batch '
        'size, image size, augmentation, seed, ...: hybrid_zoo_config.train.RESUME_MUST_MATCH) differs from the run that '
        'wrote it; --workers, --eval-batch-size, --log-with, --stop-after-epoch, --output-dir, --cpu, --compile, '
        '--channels-last, --grad-checkpointing and the path of the same --dataset may change. Checkpoints hold pickles written by accelerate (optimizer, RNG and EMA '
        'state), which --resume unpickles: point it only at folders you trust. Each checkpoint carries a sha256 '
        'manifest written at save time, and a folder with a changed, missing or extra file is refused',
        'run',
    )
    stop_after_epoch: int | None = option(
        None,
        'stop this run after that epoch (checkpoint kept, no export), keeping the --epochs schedule; continue '
        'later with --resume auto (time-sliced or preemptible jobs)',
        'run',
    )
    checkpoint_every: int | None = option(
        None,
        'streamed data: also checkpoint every N optimizer updates within an epoch (checkpoints/last), so a killed '
        'run resumes from that sample with --resume auto',
        'run',
    )
    log_with: str | None = option(
        None, 'also log to Accelerate trackers: tensorboard, wandb, mlflow, ... or all', 'run'
    )
    cpu: bool = option(False, 'train on CPU even when a GPU is present', 'run')
    quiet: bool = option(False, QUIET_HELP, 'output', aliases=('-q',))
    verbose: bool = option(False, VERBOSE_HELP, 'output', aliases=('-v',))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every numeric option (also for programmatic use: ``__post_init__`` calls this).

        Raises:
            TrainConfigError: naming each bad option, what it expects and what it was given.
        """
        problems = []

        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                problems.append(f'--{name.replace("_", "-")} must be {expected}, got {getattr(self, name)!r}')

        def number(name: str) -> float | None:
            value = getattr(self, name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                problems.append(f'--{name.replace("_", "-")} must be a finite number, got {value!r}')
                return None
            return value

        def positive_int(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, name, 'an integer >= 1')

        for name in ('epochs', 'batch_size', 'grad_accum_steps'):
            positive_int(name)
        for name in ('eval_batch_size', 'max_train_samples', 'max_val_samples', 'img_size', 'num_classes'):
            positive_int(name, optional=True)
        positive_int('stop_after_epoch', optional=True)
        for name in ('samples_per_epoch', 'checkpoint_every'):
            positive_int(name, optional=True)
        positive_int('shuffle_buffer')
        need(isinstance(self.workers, int) and self.workers >= 0, 'workers', 'an integer >= 0')
        need(is_seed(self.seed), 'seed', SEED_RANGE)
        need(self.in_chans in (None, 1, 3), 'in_chans', '1 (grayscale) or 3 (RGB)')
        need(self.mixed_precision in (None, 'no', 'bf16', 'fp16'), 'mixed_precision', "'no', 'bf16' or 'fp16'")
        need(isinstance(self.model_kwargs, dict), 'model_kwargs', 'a dict of KEY=VALUE')
        if self.quiet and self.verbose:
            problems.append('--quiet and --verbose exclude each other; expected one of them, got both')

        ranges = {  # name: (low, high, low inclusive, high inclusive)
            'val_fraction': (0.0, 1.0, False, False),
            'lr': (0.0, math.inf, False, False),
            'warmup_lr': (0.0, math.inf, True, False),
            'min_lr': (0.0, math.inf, True, False),
            'weight_decay': (0.0, math.inf, True, False),
            'momentum': (0.0, 1.0, True, True),
            'warmup_epochs': (0.0, math.inf, True, False),
            'layer_decay': (0.0, math.inf, False, False),
            'clip_grad': (0.0, math.inf, False, False),
            'drop_rate': (0.0, 1.0, True, False),
            'drop_path_rate': (0.0, 1.0, True, False),
            'hflip': (0.0, 1.0, True, True),
            'color_jitter': (0.0, math.inf, True, False),
            'reprob': (0.0, 1.0, True, True),
            'mixup': (0.0, math.inf, True, False),
            'cutmix': (0.0, math.inf, True, False),
            'mixup_prob': (0.0, 1.0, True, True),
            'mixup_switch_prob': (0.0, 1.0, True, True),
            'smoothing': (0.0, 1.0, True, False),
            'ema_decay': (0.0, 1.0, True, True),
        }
        for name, (low, high, low_in, high_in) in ranges.items():
            value = number(name)
            if value is None:
                continue
            ok = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
            if not ok:
                lo, hi = ('[' if low_in else '('), (']' if high_in else ')')
                need(False, name, f'in {lo}{low:g}, {high:g}{hi}')
        scale = tuple(self.scale) if isinstance(self.scale, (tuple, list)) else ()
        finite = len(scale) == 2 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in scale)
        need(finite and 0 < scale[0] <= scale[1], 'scale', 'MIN MAX with 0 < MIN <= MAX')
        if (self.mixup or self.cutmix) and isinstance(self.batch_size, int) and self.batch_size % 2:
            problems.append(f'mixup/cutmix need an even --batch-size, got {self.batch_size}')
        if problems:
            raise TrainConfigError('; '.join(problems))


# What a resumed run may change. Every TrainConfig field is in exactly one of the two lists (a test checks it), so a
# new option has to be classified. Options that change the math of the run (what is trained on, the model, the
# schedule, the optimizer, the augmentation, the seed) must equal those of the run that wrote the checkpoint, or the
# resumed run would silently mix two recipes while train_args.json names one of them.
RESUME_MUST_MATCH = (
    # the model
    'model',
    'pretrained',
    'num_classes',
    'in_chans',
    'img_size',
    'drop_rate',
    'drop_path_rate',
    'model_kwargs',
    # the data (the dataset itself is compared by identity: name, splits, classes, row counts; a moved folder resumes)
    'dataset_config',
    'train_split',
    'val_split',
    'val_fraction',
    'image_column',
    'label_column',
    'max_train_samples',
    'max_val_samples',
    'streaming',
    'samples_per_epoch',
    'shuffle_buffer',
    # augmentation and regularisation
    'no_aug',
    'scale',
    'hflip',
    'color_jitter',
    'aa',
    'reprob',
    'mixup',
    'cutmix',
    'mixup_prob',
    'mixup_switch_prob',
    'smoothing',
    # optimisation
    'epochs',
    'batch_size',
    'grad_accum_steps',
    'opt',
    'lr',
    'weight_decay',
    'momentum',
    'layer_decay',
    'clip_grad',
    'sched',
    'warmup_epochs',
    'warmup_lr',
    'min_lr',
    'mixed_precision',
    'ema',
    'ema_decay',
    'ema_warmup',
    'seed',
)
# speed, memory, logging and where things go: the numbers a resumed run computes do not depend on these
RESUME_MAY_CHANGE = (
    'dataset',
    'embedded_cache',
    'workers',
    'eval_batch_size',
    'grad_checkpointing',
    'channels_last',
    'compile',
    'output_dir',
    'overwrite',
    'resume',
    'stop_after_epoch',
    'checkpoint_every',
    'log_with',
    'cpu',
    'quiet',
    'verbose',
)


# ----------------------------------------------------------------------------------------------------------------------
# Command line generated from TrainConfig


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo train`` parser: one flag per ``TrainConfig`` field, and the refused ``--data-dir``."""
    parser = argparse.ArgumentParser(
        prog='hybrid-zoo train',
        description='Train or fine-tune a timm model on a Hugging Face image dataset with Accelerate. One process: '
        '`hybrid-zoo train ...`; several: `accelerate launch [--multi_gpu --num_processes N] -m hybrid_zoo.train ...` '
        '(on CPU add ACCELERATE_USE_CPU=1). Writes checkpoints, metrics.jsonl and a Hub-ready model folder.',
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    add_dataclass_arguments(parser, TrainConfig, groups)
    add_data_dir_refusal(groups['data'])
    add_timm_refusals(parser.add_argument_group("timm's train.py flags with another name here"))
    return parser


# timm train.py flags whose meaning differs here: each fails at once with the option to use instead
TIMM_REFUSED: dict[str, tuple[str, str]] = {
    '--amp': ('0', "--mixed-precision bf16 (or fp16 on a GPU); timm's --amp defaults to float16"),
    '--torchcompile': ('?', '--compile (inductor, through Accelerate)'),
    '--initial-checkpoint': ('1', '--pretrained FOLDER_OR_HUB_ID (safetensors in timm save_for_hf layout; no pickles)'),
    '--input-size': ('+', '--in-chans C and --img-size N (square inputs)'),
    '--log-interval': (
        '1',
        'no interval to set: a bar on a terminal, a progress line every 30 s in a file, metrics.jsonl every '
        'epoch, --log-with',
    ),
    '--experiment': ('1', '--output-dir DIR'),
}


class _RefuseTimmFlag(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f'{option_string} is a timm train.py flag; here: {TIMM_REFUSED[option_string][1]}')


def add_timm_refusals(group) -> None:
    """Add timm's ``train.py`` flags that mean something else here; each is a usage error naming ours."""
    for flag, (nargs, ours) in TIMM_REFUSED.items():
        group.add_argument(
            flag,
            nargs={'0': 0, '1': None}.get(nargs, nargs),
            action=_RefuseTimmFlag,
            default=argparse.SUPPRESS,
            help=f'not accepted: {ours}',
        )


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a ``TrainConfig``; invalid values, and an ``--output-dir`` (or, without one,
    the folder of new runs) that cannot be made or written, are usage errors (exit 2)."""
    parser = build_parser()
    try:
        cfg = config_from_namespace(TrainConfig, parser.parse_args(argv))
    except TrainConfigError as e:
        parser.error(str(e))
    problem = unwritable_output(folders={'--output-dir': cfg.output_dir or TRAIN_RUNS})
    if problem:
        parser.error(problem)
    return cfg
