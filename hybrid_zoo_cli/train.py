"""Command line and configuration of ``hybrid-zoo train``: ``TrainConfig`` holds every option, and the parser is
generated from its fields (one help text per field). Imports only the standard library, so ``hybrid-zoo train --help``
starts at once; ``hybrid_zoo.train.loop`` runs the configuration.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import EMBEDDED_CACHE, add_data_dir_refusal


def _opt(default: Any, help: str, group: str, **argparse_kwargs: Any) -> Any:
    """A ``TrainConfig`` field carrying its command-line help, group and extra argparse settings."""
    meta = {'help': help, 'group': group, 'argparse': argparse_kwargs}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Every training option. Field ``foo_bar`` is the command-line flag ``--foo-bar``; see ``hybrid-zoo train -h``."""

    # model
    model: str = _opt('convformer_tiny', 'timm model name (any registered model; hybrid_zoo models included)', 'model')
    pretrained: str | None = _opt(
        None,
        "start from pretrained weights: no value = the model's default tag; a tag ('in1k') or 'arch.tag'; "
        "'hf-hub:org/name'; or a local folder in timm save_for_hf layout. The classifier is re-initialised when "
        '--num-classes differs, and the stem is adapted when --in-chans differs',
        'model',
        nargs='?',
        const='default',
        metavar='SOURCE',
    )
    num_classes: int | None = _opt(None, 'classifier width (default: the number of classes of the dataset)', 'model')
    in_chans: int | None = _opt(
        None, "input channels, 1 (grayscale) or 3 (default: the model's, usually 3); images are converted", 'model'
    )
    img_size: int | None = _opt(None, "training and validation resolution (default: the model's, e.g. 224)", 'model')
    drop_rate: float | None = _opt(None, "classifier dropout (default: the model's)", 'model')
    drop_path_rate: float | None = _opt(None, "stochastic depth rate (default: the model's)", 'model')
    model_kwargs: dict = _opt(
        {}, 'extra model constructor arguments, KEY=VALUE (values parsed as Python literals)', 'model'
    )
    grad_checkpointing: bool = _opt(False, 'gradient checkpointing (less memory, more compute)', 'model')
    channels_last: bool = _opt(
        False, 'channels_last memory format (faster convolutions on CPU and recent GPUs)', 'model'
    )
    compile: bool = _opt(False, 'torch.compile the model (inductor; via Accelerate)', 'model')

    # data
    dataset: str = _opt(
        'default',
        'the data: a save_to_disk folder, an imagefolder directory, parquet file(s) or glob, a Hub dataset id '
        "(org/name), or 'default' = embedded Fashion-MNIST (or digits), prepared under --embedded-cache when missing",
        'data',
    )
    dataset_config: str | None = _opt(None, 'configuration name of a Hub dataset', 'data')
    train_split: str = _opt('train', 'split to train on', 'data')
    val_split: str | None = _opt(
        None,
        'validation split, which picks the best checkpoint and the EMA (default: validation/valid/val if present, '
        "else --val-fraction carved from the train split; never 'test' unless asked: --val-split test validates on "
        'the test split, and its numbers are then no held-out test score)',
        'data',
    )
    val_fraction: float = _opt(
        0.1,
        'share of the train split held out (stratified by label, seeded by --seed) when there is no val split',
        'data',
    )
    image_column: str | None = _opt(None, 'image column (default: detected, an Image() feature)', 'data')
    label_column: str | None = _opt(None, 'label column (default: detected, a ClassLabel or an int column)', 'data')
    max_train_samples: int | None = _opt(None, 'train on a seeded random subset of this many rows (quick runs)', 'data')
    max_val_samples: int | None = _opt(None, 'validate on a seeded random subset of this many rows', 'data')
    embedded_cache: str = _opt(
        EMBEDDED_CACHE,
        f'folder where --dataset default (the embedded Fashion-MNIST/digits) is prepared when missing (default: '
        f'{EMBEDDED_CACHE}); nothing else is ever written into a data folder',
        'data',
    )
    workers: int = _opt(2, 'DataLoader worker processes per training process (0 = load in the main process)', 'data')

    # augmentation and regularisation
    no_aug: bool = _opt(False, 'no training augmentation: only resize, crop and normalise', 'augmentation')
    scale: tuple[float, float] = _opt(
        (0.08, 1.0), 'RandomResizedCrop area range', 'augmentation', metavar=('MIN', 'MAX')
    )
    hflip: float = _opt(0.5, 'horizontal flip probability', 'augmentation')
    color_jitter: float = _opt(0.4, 'colour jitter strength (ignored with --aa)', 'augmentation')
    aa: str | None = _opt(
        None,
        "auto augmentation: a timm policy such as 'rand-m9-mstd0.5-inc1' (RandAugment) or 'augmix-m5-w4-d2', or "
        "'trivialaugment' (one op at a uniformly sampled magnitude: timm 'rand-n1-mstd101-inc1-p1.0')",
        'augmentation',
    )
    reprob: float = _opt(0.0, 'random erasing probability', 'augmentation')
    mixup: float = _opt(0.0, 'mixup alpha (0 = off); with mixup or cutmix the loss uses soft targets', 'augmentation')
    cutmix: float = _opt(0.0, 'cutmix alpha (0 = off)', 'augmentation')
    mixup_prob: float = _opt(1.0, 'probability of applying mixup or cutmix to a batch', 'augmentation')
    mixup_switch_prob: float = _opt(0.5, 'probability of cutmix instead of mixup when both are on', 'augmentation')
    smoothing: float = _opt(0.1, 'label smoothing', 'augmentation')

    # optimisation
    epochs: int = _opt(10, 'training epochs (the cosine schedule spans them)', 'optimisation')
    batch_size: int = _opt(
        64, 'batch size per process (global batch = this x processes x --grad-accum-steps)', 'optimisation'
    )
    eval_batch_size: int | None = _opt(
        None, 'validation batch size per process (default: 2 x --batch-size)', 'optimisation'
    )
    grad_accum_steps: int = _opt(1, 'gradient accumulation steps per optimizer update', 'optimisation')
    opt: str = _opt('adamw', 'timm optimizer name (create_optimizer_v2): adamw, sgd, lamb, lion, ...', 'optimisation')
    lr: float = _opt(1e-3, 'peak learning rate', 'optimisation')
    weight_decay: float = _opt(
        0.05, 'weight decay (not applied to norms, biases and no_weight_decay() params)', 'optimisation'
    )
    momentum: float = _opt(0.9, 'momentum of SGD-style optimizers', 'optimisation')
    layer_decay: float | None = _opt(
        None, "layer-wise lr decay (needs the model's group_matcher), e.g. 0.75", 'optimisation'
    )
    clip_grad: float | None = _opt(None, 'clip the gradient norm to this value (default: off)', 'optimisation')
    sched: str = _opt('cosine', 'timm schedule (create_scheduler_v2), stepped per optimizer update', 'optimisation')
    warmup_epochs: float = _opt(1.0, 'linear warmup length in epochs (fractions allowed)', 'optimisation')
    warmup_lr: float = _opt(1e-5, 'learning rate at the start of warmup', 'optimisation')
    min_lr: float = _opt(1e-6, 'learning rate at the end of the schedule', 'optimisation')
    mixed_precision: str | None = _opt(
        None,
        'autocast: no, bf16 or fp16 (default: the accelerate launch setting, else no). On CPU only bf16 does '
        'anything, and is usually slower',
        'optimisation',
        choices=('no', 'bf16', 'fp16'),
    )
    ema: bool = _opt(False, 'keep an EMA of the weights (timm ModelEmaV3), evaluated every epoch too', 'optimisation')
    ema_decay: float = _opt(0.9998, 'EMA decay', 'optimisation')
    ema_warmup: bool = _opt(True, 'ramp the EMA decay up from 0 (useful for short runs)', 'optimisation')
    seed: int = _opt(
        42, 'random seed (model init, data order, augmentation); runs with equal seeds are identical', 'optimisation'
    )

    # run
    output_dir: str | None = _opt(None, 'output folder (default: runs/<model>)', 'run')
    resume: str | None = _opt(
        None,
        "resume from a checkpoint folder, or 'auto' = <output_dir>/checkpoints/last if it exists. Refused when the "
        'model or the data differ',
        'run',
    )
    stop_after_epoch: int | None = _opt(
        None,
        'stop this run after that epoch (checkpoint kept, no export), keeping the --epochs schedule; continue '
        'later with --resume auto (time-sliced or preemptible jobs)',
        'run',
    )
    log_with: str | None = _opt(None, 'also log to Accelerate trackers: tensorboard, wandb, mlflow, ... or all', 'run')
    cpu: bool = _opt(False, 'train on CPU even when a GPU is present', 'run')

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f'runs/{self.model}')


# ----------------------------------------------------------------------------------------------------------------------
# Command line generated from TrainConfig


class KeyValueAction(argparse.Action):
    """``--flag KEY=VALUE ...`` into a dict; values are Python literals, a bare word is a string."""

    def __call__(self, parser, namespace, values, option_string=None):
        kwargs = {}
        for item in values:
            key, sep, value = item.partition('=')
            if not sep:
                parser.error(f'{option_string} expects KEY=VALUE, got {item!r}')
            try:
                kwargs[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kwargs[key] = value  # a bare word is a string
        setattr(namespace, self.dest, kwargs)


def _strip_optional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def build_parser() -> argparse.ArgumentParser:
    """The ``hybrid-zoo train`` parser: one flag per ``TrainConfig`` field, and the refused ``--data-dir``."""
    parser = argparse.ArgumentParser(
        prog='hybrid-zoo train',
        description='Train or fine-tune a timm model on a Hugging Face image dataset with Accelerate. One process: '
        '`hybrid-zoo train ...`; several: `accelerate launch [--multi_gpu --num_processes N] -m hybrid_zoo.train.loop ...` '
        '(on CPU add ACCELERATE_USE_CPU=1). Writes checkpoints, metrics.jsonl and a Hub-ready model folder.',
    )
    hints = typing.get_type_hints(TrainConfig)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        group = groups.setdefault(meta['group'], parser.add_argument_group(meta['group']))
        kwargs = {'help': meta['help'], 'dest': f.name, **meta['argparse']}
        tp = _strip_optional(hints[f.name])
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if 'default' not in kwargs['help'] and default not in (None, False, {}):
            shown = ' '.join(map(str, default)) if isinstance(default, tuple) else default
            kwargs['help'] += f' (default: {shown})'
        if tp is bool:
            # off by default: a plain switch; on by default: --x / --no-x
            kwargs['action'] = argparse.BooleanOptionalAction if default else 'store_true'
        elif typing.get_origin(tp) is tuple:
            kwargs.update(nargs=len(typing.get_args(tp)), type=typing.get_args(tp)[0])
        elif typing.get_origin(tp) is dict or tp is dict:
            kwargs.update(nargs='*', action=KeyValueAction, metavar='KEY=VALUE')
        else:
            kwargs['type'] = tp
        group.add_argument('--' + f.name.replace('_', '-'), default=default, **kwargs)
    add_data_dir_refusal(groups['data'])
    return parser


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse command-line arguments into a ``TrainConfig``."""
    ns = build_parser().parse_args(argv)
    values = vars(ns)
    values['scale'] = tuple(values['scale'])
    return TrainConfig(**values)
