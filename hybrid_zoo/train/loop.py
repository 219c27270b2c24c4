"""Train or fine-tune any timm model on any Hugging Face image dataset with Accelerate, one process or many.

The same code runs ``hybrid-zoo train`` or ``python -m hybrid_zoo.train`` (one process) and ``accelerate launch -m
hybrid_zoo.train`` (N GPUs, N machines, or N CPU processes over gloo). The pieces are the libraries' own: timm builds the model,
transforms, mixup, optimizer (``create_optimizer_v2``), schedule (``create_scheduler_v2``, stepped per update) and
EMA (``ModelEmaV3``); Accelerate does devices, processes, mixed precision, gradient accumulation, checkpoint state
and trackers; ``datasets`` holds the data.

Output directory: the layout and every file name are in :mod:`hybrid_zoo.run_files`.

What the trainer may delete is its own: a non-empty output folder without the marker (or a checkpoint of ours) is
refused, files it did not write in ``model/`` or a checkpoint folder are refused at start (and carried over, never
deleted, when the folder is replaced), and the debris of interrupted writes (``.model.tmp-*``, ``.best.tmp-*``, ...)
is removed at start. A resumed run must use the options of the run that wrote the checkpoint (``RESUME_MUST_MATCH``),
and its checkpoint must match the sha256 manifest written when it was saved; ``checkpoints/best`` is repaired from
``last`` when a kill came between writing the two.

``TrainConfig`` holds every option; it and the command line generated from its fields live in
``hybrid_zoo_config.train`` (no torch, so ``--help`` starts at once) and are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast_object_list, set_seed
from timm.data import Mixup, create_transform
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.models import save_for_hf
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3

from hybrid_zoo.atomic import temp_dir_beside, write_atomic
from hybrid_zoo.logs import NORMAL, QUIET, VERBOSE, progress, setup_logging
from hybrid_zoo.models.model import ConvFormerFusion
from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError
from hybrid_zoo.models.variants import ARCH_VERSION
from hybrid_zoo.run_files import (
    BEST,
    CHECKPOINT_META,
    CHECKPOINTS_DIR,
    CONFUSION_MATRIX,
    LAST,
    LOGS_DIR,
    METRICS,
    MODEL_DIR,
    PICKLE_WEIGHTS_NAME,
    RESULTS,
    TRAIN_ARGS,
    TRAINING_CURVES,
)
from hybrid_zoo.train.checkpoints import (  # noqa: F401 (the errors are re-exported)
    CHECKPOINT_FORMAT,
    MANIFEST,
    MODEL_FILES,
    RUN_MARKER,
    CheckpointError,
    OutputDirError,
    ResumeMismatchError,
    check_output_dir,
    check_resumable,
    check_rng_state,
    copy_checkpoint,
    find_resume_checkpoint,
    holds_run,
    missing_folders,
    prepare_output_dir,
    publish_dir,
    remove_unstarted_run,
    repair_best,
    run_folder,
    save_checkpoint,
    verify_checkpoint,
    ways_out,
    write_json,
)
from hybrid_zoo.train.data import (
    DataError,
    ImageClassificationDataset,
    load_train_val,
    model_data_config,
)
from hybrid_zoo.train.evaluate import (
    ModelLoadError,
    UnknownModelError,  # noqa: F401 (fit raises it; re-exported)
    _cpu_only_multiprocess,
    _fresh_accelerator,
    classification_metrics,
    create_model,
    model_name,
    predict,
    resolve_model_source,
)
from hybrid_zoo.train.plotting import plot_confusion_matrix, plot_training_curves
from hybrid_zoo.train.streaming import StreamBatches, describe_slots, open_stream, samples_per_epoch, wants_streaming
from hybrid_zoo_config.train import (  # noqa: F401 (re-exported)
    RESUME_MAY_CHANGE,
    RESUME_MUST_MATCH,
    TrainConfig,
    TrainConfigError,
)

logger = logging.getLogger('hybrid_zoo.train.loop')  # not __name__: that is '__main__' under python -m


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is left as it was."""


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The model to train: ``cfg.model`` (random init) or ``cfg.pretrained`` weights, sized for the data.

    Raises:
        TrainConfigError: constructor arguments (``--model-kwargs``, drop rates) the model does not accept.
    """
    name, pretrained = resolve_model_source(cfg.model, cfg.pretrained)
    kwargs = dict(cfg.model_kwargs, num_classes=num_classes)
    for key in ('in_chans', 'drop_rate', 'drop_path_rate'):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    try:
        model = create_model(name, pretrained=pretrained, img_size=cfg.img_size, **kwargs)
    except (TypeError, ValueError) as e:
        if type(e) not in (TypeError, ValueError):  # the loader's own errors (unknown model, bad weights) say enough
            raise
        reason = (str(e).strip().splitlines() or [''])[0]
        raise TrainConfigError(  # a constructor refusing an argument (or its value)
            f'cannot build {name} with {kwargs} (from --model-kwargs {cfg.model_kwargs}, --in-chans, --drop-rate, '
            f'--drop-path-rate): {type(e).__name__}: {reason}; expected arguments its constructor accepts'
        ) from e
    if pretrained and name.startswith(('hf-hub:', 'local-dir:')) and model_name(model) != cfg.model:
        logger.info('architecture %r comes from %s (--model %r ignored)', model_name(model), name, cfg.model)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def keep_grad_strides(model: torch.nn.Module) -> None:
    """Give every gradient its parameter's strides, which DDP's bucket views copy, before DDP reads it.

    A kernel may return a gradient laid out like its parameter in memory but with other strides on size-1 dims: the
    weight gradient of a 1x1 conv on a 1x1 map comes back channels_last-strided, ``(C, 1, C, C)`` for a parameter
    strided ``(C, 1, 1, 1)``. Autograd accepts it (its layout contract skips size-1 dims); DDP compares every
    stride and warns on each rank that the layout "may impair performance" (pytorch/pytorch#70222). Both address
    the same elements, so the fix is a view with the parameter's strides, not a copy.
    """
    for p in model.parameters():
        if p.requires_grad and 1 in p.shape:
            p.register_hook(functools.partial(_with_strides_of, p))


def _with_strides_of(p: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    if grad.stride() == p.stride() or grad.shape != p.shape:
        return grad
    if any(n != 1 and a != b for n, a, b in zip(grad.shape, grad.stride(), p.stride(), strict=True)):
        return grad  # another layout in memory: a view cannot fix it (autograd copies it to the parameter's)
    return grad.as_strided(p.shape, p.stride())


def check_input_size(model: torch.nn.Module, data_cfg: dict, arch: str) -> None:
    """One forward pass of a blank image at the training size, so a size the model cannot take fails now, in a line.

    Raises:
        TrainConfigError: the model rejects the input size (e.g. ``--img-size 16`` for a model that needs 32).
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *data_cfg['input_size']))  # (1, C, H, W)
    except (RuntimeError, ValueError, AssertionError, IndexError) as e:
        size = 'x'.join(map(str, data_cfg['input_size'][1:]))
        reason = (str(e).strip().splitlines() or [''])[0]
        raise TrainConfigError(
            f'{arch} cannot take {size} px inputs (--img-size): {type(e).__name__}: {reason}; expected a size the '
            'model accepts (its default is in its pretrained_cfg input_size)'
        ) from e
    finally:
        model.train(was_training)


def build_transforms(cfg: TrainConfig, data_cfg: dict) -> tuple[Any, Any]:
    """timm train and eval transforms for the model's data config."""

    aa = 'rand-n1-mstd101-inc1-p1.0' if cfg.aa == 'trivialaugment' else cfg.aa
    train_tf = create_transform(
        **data_cfg,
        is_training=True,
        no_aug=cfg.no_aug,
        scale=cfg.scale,
        hflip=cfg.hflip,
        color_jitter=cfg.color_jitter,
        auto_augment=aa,
        re_prob=cfg.reprob,
    )
    return train_tf, create_transform(**data_cfg)


def build_loss(cfg: TrainConfig, num_classes: int) -> tuple[Any, torch.nn.Module]:
    """``(mixup or None, training loss)``, chosen as timm's train.py does; label smoothing moves into mixup."""

    if cfg.mixup > 0 or cfg.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=cfg.mixup,
            cutmix_alpha=cfg.cutmix,
            prob=cfg.mixup_prob,
            switch_prob=cfg.mixup_switch_prob,
            label_smoothing=cfg.smoothing,
            num_classes=num_classes,
        )
        return mixup, SoftTargetCrossEntropy()
    if cfg.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(cfg.smoothing)
    return None, torch.nn.CrossEntropyLoss()


# ----------------------------------------------------------------------------------------------------------------------
# The training loop


@dataclass(kw_only=True)
class _Run:
    """What the loop passes around: prepared objects and progress counters."""

    cfg: TrainConfig
    accelerator: Any
    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    train_loader: Any
    val_loader: Any
    ema: Any
    mixup: Any
    loss_fn: torch.nn.Module
    label_names: list[str]
    out: Path
    save_position: Any = None  # streamed data: saves a mid-epoch checkpoint at a position (--checkpoint-every)
    resume_position: dict | None = None  # streamed data: where in its epoch a resumed run continues
    epoch: int = 0
    num_updates: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0


def _check_finite(run: _Run, loss: torch.Tensor, epoch: int, step: int) -> None:
    # every process takes part, so all of them stop together instead of leaving the others waiting in all-reduce
    bad = run.accelerator.reduce((~torch.isfinite(loss.detach())).float(), reduction='max')
    if bad.item():
        last = run.out / CHECKPOINTS_DIR / LAST
        kept = (
            f'The last good checkpoint {last} (epoch {run.epoch}) is untouched'
            if (last / CHECKPOINT_META).is_file()
            else 'No checkpoint had been written yet'
        )
        raise NonFiniteLossError(
            f'training loss is {loss.item()} at epoch {epoch + 1}, step {step} (update {run.num_updates}): stopped. '
            f'{kept}. Try a lower --lr, --clip-grad 1.0, more --warmup-epochs, or --mixed-precision no/bf16.'
        )


def _forward(run: _Run, x: torch.Tensor) -> torch.Tensor:
    try:
        return run.model(x)
    except ValueError as e:
        if 'Expected more than 1 value per channel' not in str(e):
            raise
        raise TrainConfigError(
            f'--batch-size {run.cfg.batch_size}: with {x.shape[0]} image(s) per process a BatchNorm layer of '
            f'{run.cfg.model} sees a single value per channel (a 1x1 map at this --img-size), which it cannot '
            'normalise in training; expected --batch-size 2 or more (or a larger --img-size)'
        ) from e


def train_one_epoch(run: _Run, epoch: int, bar) -> dict:
    """One pass over the training data; returns the mean loss, throughput and time of the epoch.

    A resumed stream (``run.resume_position``) continues the epoch from the checkpointed micro-batch, with the loss
    sum, image count and time of the part already done, so the epoch's record equals an uninterrupted one.
    """
    acc, cfg, loader = run.accelerator, run.cfg, run.train_loader
    run.model.train()
    loader.set_epoch(epoch)  # the order is a function of (seed, epoch): resumable
    pos = run.resume_position if run.resume_position and run.resume_position['epoch'] == epoch else None
    run.resume_position = None
    loss_sum = torch.full((), pos['loss_sum'] if pos else 0.0, device=acc.device)
    steps, images, lr_sum = (pos['steps'], pos['images'], pos['lr_sum']) if pos else (0, 0, 0.0)
    start = time.perf_counter() - (pos['seconds'] if pos else 0.0)
    if pos:
        loader.skip = steps
    try:
        for step, (x, y) in enumerate(loader, start=steps):
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if run.mixup is not None:
                x, y = run.mixup(x, y)  # y: (B,) int -> (B, num_classes) soft targets
            with acc.accumulate(run.model):
                loss = run.loss_fn(_forward(run, x), y)
                _check_finite(run, loss, epoch, step)
                acc.backward(loss)
                if acc.sync_gradients and cfg.clip_grad:
                    acc.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
                run.optimizer.step()  # a no-op on accumulation steps (Accelerate's optimizer wrapper)
                run.optimizer.zero_grad()
            loss_sum += loss.detach()
            steps += 1
            batch = x.shape[0] * acc.num_processes
            images += batch
            bar.update(batch)
            if acc.sync_gradients:
                lr_sum += run.optimizer.param_groups[0]['lr']  # the lr this update used
                run.num_updates += 1
                run.scheduler.step_update(num_updates=run.num_updates)
                if run.ema is not None:
                    run.ema.update(acc.unwrap_model(run.model), step=run.num_updates)
                every = cfg.checkpoint_every
                if run.save_position and every and run.num_updates % every == 0 and steps < len(loader):
                    run.save_position(
                        {
                            'epoch': epoch,
                            'steps': steps,
                            # the mean over processes: each adds its own rest to it, and the epoch's mean comes out
                            'loss_sum': acc.reduce(loss_sum.clone(), reduction='mean').item(),
                            'images': images,
                            'lr_sum': lr_sum,
                            'seconds': time.perf_counter() - start,
                        }
                    )
            if step % 10 == 0:
                bar.set_postfix(
                    loss=f'{loss.item():.3f}', lr=f'{run.optimizer.param_groups[0]["lr"]:.2e}', refresh=False
                )
    finally:
        if pos:
            loader.skip = 0
    elapsed = time.perf_counter() - start
    mean_loss = acc.reduce(loss_sum, reduction='mean').item() / max(steps, 1)
    return {
        'train_loss': mean_loss,
        'lr': lr_sum / max(math.ceil(steps / cfg.grad_accum_steps), 1),
        'images_per_s': images / max(elapsed, 1e-9),
        'train_time': elapsed,
    }


def validate(run: _Run) -> tuple[dict, dict | None]:
    """Metrics of the model and, when on, of its EMA on the validation split."""
    metrics = classification_metrics(
        predict(run.model, run.val_loader, run.accelerator, channels_last=run.cfg.channels_last), run.label_names
    )
    ema_metrics = None
    if run.ema is not None:
        pred = predict(run.ema.module, run.val_loader, run.accelerator, channels_last=run.cfg.channels_last)
        ema_metrics = classification_metrics(pred, run.label_names)
    return metrics, ema_metrics


def _epoch_record(epoch: int, train: dict, val: dict, ema: dict | None, seconds: float) -> dict:
    record = {
        'epoch': epoch,
        'train_loss': round(train['train_loss'], 6),
        'val_loss': val['loss'],
        'val_top1': val['top1'],
        'val_top5': val['top5'],
        'lr': train['lr'],  # mean over the epoch's updates
        'images_per_s': round(train['images_per_s'], 2),
        'time': round(seconds, 3),
    }
    if ema is not None:
        record.update(ema_val_loss=ema['loss'], ema_val_top1=ema['top1'], ema_val_top5=ema['top5'])
    return record


def _read_metrics(path: Path, upto_epoch: int, last_record: dict | None) -> list[dict]:
    """Epoch records up to the resumed epoch (a killed run may have logged one more, or one fewer).

    A line that is not a JSON record (a torn last line, an edit) is skipped with a warning.
    """
    records = []
    if path.is_file():
        for number, line in enumerate(path.read_text(errors='replace').splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or not isinstance(rec.get('epoch'), int):
                logger.warning('%s line %d is not an epoch record (cut short?): skipped: %.80r', path, number, line)
                continue
            if rec['epoch'] <= upto_epoch:
                records.append(rec)
    if last_record and not any(r['epoch'] == last_record['epoch'] for r in records):
        records.append(last_record)
    return records


def _resume_history(path: Path, meta: dict) -> list[dict]:
    """The epoch records of a resumed run: the checkpoint's copy, which survives a cut or emptied ``metrics.jsonl``."""
    logged = _read_metrics(path, meta['epoch'], None)
    kept = meta.get('history') or logged
    lost = sorted({r['epoch'] for r in kept} - {r['epoch'] for r in logged})
    if lost:
        logger.warning('%s lacks epoch(s) %s (cut short or emptied): restored from the checkpoint', path, lost)
    return [dict(r) for r in kept if r['epoch'] <= meta['epoch']]


def _write_metrics(path: Path, history: list[dict]) -> None:
    write_atomic(path, ''.join(json.dumps(r) + '\n' for r in history))


def _tracker_config(cfg: TrainConfig) -> dict:
    # trackers (tensorboard hparams) take scalars and strings only
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in dataclasses.asdict(cfg).items()}


def _tag(dataset_name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', dataset_name.split('/')[-1].lower()).strip('_') or 'custom'


def export_model(run: _Run, spec, data_cfg: dict, final: dict, results: dict, history: list[dict]) -> Path:
    """Write ``<output_dir>/model``: timm ``save_for_hf`` files, results, args and plots; published atomically."""

    net = (
        run.ema.module
        if results['weights'] == 'ema'
        else run.accelerator.unwrap_model(run.model, keep_torch_compile=False)
    )
    # safetensors wants contiguous tensors on CPU: undo channels_last on a copy
    net = copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)
    dst = run.out / MODEL_DIR
    tmp = temp_dir_beside(dst)
    model_config = {'label_names': list(run.label_names), 'pretrained_cfg': {'tag': _tag(spec.name)}}
    if isinstance(net, ConvFormerFusion):  # the package's architecture version; model_args hold the architecture
        model_config['hybrid_zoo_architecture_version'] = ARCH_VERSION
    save_for_hf(net, tmp, model_config=model_config, safe_serialization=True, data_config=data_cfg)
    (tmp / PICKLE_WEIGHTS_NAME).unlink(missing_ok=True)  # safetensors only
    write_json(tmp / RESULTS, results)
    write_json(tmp / TRAIN_ARGS, dataclasses.asdict(run.cfg))
    title = f'{results["model"]} on {spec.name}'
    plot_training_curves(history, tmp / TRAINING_CURVES, title=title)
    plot_confusion_matrix(
        final['confusion_matrix'], run.label_names, tmp / CONFUSION_MATRIX, f'{title} ({spec.val_split})'
    )
    publish_dir(tmp, dst, MODEL_FILES)
    return dst


@dataclass
class _Setup:
    """What :func:`_setup` prepared for the epochs: the run, its data, the checkpoint identity, the history."""

    run: _Run
    spec: Any  # the dataset's DatasetSpec
    arch: str
    data_cfg: dict
    meta_base: dict  # what every checkpoint's meta.json records about the model and the data
    history: list[dict]
    num_epochs: int
    updates_per_epoch: int
    started: float


def fit(cfg: TrainConfig) -> dict:
    """Train (or fine-tune, or resume) as ``cfg`` says, on every process of the current launch.

    Args:
        cfg: The options.

    Returns:
        Final metrics, the same on every process: ``top1``, ``top5``, ``loss``, ``per_class`` (percent) on the
        validation split (``split``; ``val_source`` says where its rows come from: never the test split unless
        ``cfg.val_split`` asks for it) for the exported weights, ``weights`` (``'model'`` or ``'ema'``), ``best_top1``,
        ``best_epoch``, ``epochs_done``, ``num_updates``, ``model_dir`` (``None`` if stopped early), ``output_dir``.

    Raises:
        DataError: unusable data (missing columns, labels outside the classes, an unreadable image).
        UnknownModelError: a model name timm does not know.
        TrainConfigError: options the model cannot take (``--model-kwargs``, ``--img-size``, a batch of 1 with
            BatchNorm).
        OutputDirError: ``output_dir`` holds files this trainer did not write.
        ResumeMismatchError: ``cfg.resume`` points at a checkpoint of another model, other data or other options
            (``RESUME_MUST_MATCH``).
        CheckpointError: the checkpoint to resume is corrupt, changed since it was saved, or holds unknown files.
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint is kept.
    """
    started = time.perf_counter()
    acc, out, made, was_empty = _start_accelerator(cfg)
    s = None
    try:
        s = _setup(cfg, acc=acc, out=out, started=started)
        final, final_ema = _train_epochs(s)
    except BaseException:
        if acc.is_main_process and (s is None or s.run.num_updates == 0):
            remove_unstarted_run(out, made=made, was_empty=was_empty)  # failed before its first step
        raise
    return _finish(s, final, final_ema)


class _Data(NamedTuple):
    """The data a run reads: map-style splits, or a stream (``train`` None) and its validation split."""

    train: Any
    val: Any
    spec: Any  # the dataset's DatasetSpec
    stream: Any


def _setup(cfg: TrainConfig, *, acc: Accelerator, out: Path, started: float) -> _Setup:
    """Data, model, optimizer, schedule, EMA; the resumed state when resuming."""
    streaming = _check_data_options(cfg)
    data = _open_data(cfg, acc, streaming=streaming)
    model = build_model(cfg, data.spec.num_classes)
    cfg, data_cfg, arch = _resolved_config(cfg, acc=acc, out=out, model=model, data=data)
    meta_base = {
        'format': CHECKPOINT_FORMAT,
        'model': arch,
        'num_classes': data.spec.num_classes,
        'in_chans': data_cfg['input_size'][0],
        'ema': cfg.ema,
        'dataset': data.spec.identity(),
    }
    resume_dir, resume_meta = _resume_point(cfg, acc=acc, out=out, meta_base=meta_base)
    run, num_epochs, updates_per_epoch = _build_run(cfg, acc=acc, out=out, model=model, data=data, data_cfg=data_cfg)
    history = _restore(run, resume_dir=resume_dir, resume_meta=resume_meta)
    if cfg.log_with:
        acc.init_trackers(out.name, config=_tracker_config(cfg))
    return _Setup(run, data.spec, arch, data_cfg, meta_base, history, num_epochs, updates_per_epoch, started)


def _start_accelerator(cfg: TrainConfig) -> tuple[Accelerator, Path, list[Path], bool]:
    """The run's Accelerator, its output folder (chosen by the main process: ``run_folder``) checked and marked as
    ours, the seed set; with what a failed start removes: the folders marking it made (``missing_folders``) and
    whether the folder was new or empty."""
    cpu = cfg.cpu or _cpu_only_multiprocess()
    state = PartialState(cpu=cpu)  # the processes of the launch, before the Accelerator that needs the folder
    shared = [str(run_folder(cfg)) if state.is_main_process else None]  # a timestamped name: the main process's
    if state.num_processes > 1:
        broadcast_object_list(shared, from_process=0)
    out = Path(shared[0])
    acc = _fresh_accelerator(
        cpu=cpu,
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / LOGS_DIR)),
        # a seedable sampler: the shuffle order depends on (seed, epoch) only, so a resumed run sees the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        dynamo_backend='inductor' if cfg.compile else None,
    )
    if cfg.mixed_precision == 'fp16' and acc.device.type == 'cpu':
        logger.warning('fp16 autocast does nothing on CPU (training stays fp32); use bf16 or no')
    made = missing_folders(out)
    was_empty = not out.is_dir() or not any(out.iterdir())
    with acc.main_process_first():  # before anything is written: refuse a folder of other files, then mark it ours
        check_output_dir(out)
        earlier = holds_run(out)
        if earlier and not cfg.resume and not cfg.overwrite:
            raise OutputDirError(
                f'--output-dir {out} holds an earlier run ({earlier}), which a new run would replace: continue it '
                'with --resume auto, replace it with --overwrite, or choose another --output-dir (without one, '
                'every run gets a new folder under runs/train)'
            )
        if acc.is_main_process:
            prepare_output_dir(out)
    set_seed(cfg.seed)
    return acc, out, made, was_empty


def _check_data_options(cfg: TrainConfig) -> bool:
    """Whether the run streams; refuses the options of the other kind of data."""
    streaming = cfg.streaming or wants_streaming(cfg.dataset)
    if not streaming:
        for name in ('checkpoint_every', 'samples_per_epoch'):
            if getattr(cfg, name):
                flag = '--' + name.replace('_', '-')
                raise TrainConfigError(
                    f'{flag} {getattr(cfg, name)} needs --streaming (map-style data checkpoints and '
                    'counts epochs by the whole split)'
                )
    elif cfg.max_train_samples:
        raise TrainConfigError(
            f'--max-train-samples {cfg.max_train_samples} is for map-style data; a stream is never held whole: set '
            'the epoch with --samples-per-epoch N'
        )
    return streaming


def _open_data(cfg: TrainConfig, acc: Accelerator, *, streaming: bool) -> _Data:
    """The training and validation data, prepared or downloaded by the main process first."""
    common = dict(  # the data options both loaders take
        config=cfg.dataset_config,
        train_split=cfg.train_split,
        val_split=cfg.val_split,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        image_column=cfg.image_column,
        label_column=cfg.label_column,
        num_classes=cfg.num_classes,
        max_val_samples=cfg.max_val_samples,
        embedded_cache=cfg.embedded_cache,
    )
    stream = None
    with acc.main_process_first():  # the main process prepares/downloads and caches first
        if streaming:
            stream = open_stream(cfg.dataset, **common)
            train_split, val_split, spec = None, stream.val, stream.spec
        else:
            train_split, val_split, spec = load_train_val(
                cfg.dataset, max_train_samples=cfg.max_train_samples, **common
            )
    return _Data(train=train_split, val=val_split, spec=spec, stream=stream)


def _resolved_config(
    cfg: TrainConfig, *, acc: Accelerator, out: Path, model: torch.nn.Module, data: _Data
) -> tuple[TrainConfig, dict, str]:
    """What this run actually uses (as train_args.json and the checkpoints record it), its data config and the
    model's registry name."""
    spec, stream, streaming = data.spec, data.stream, data.stream is not None
    data_cfg = model_data_config(model, cfg.img_size, cfg.in_chans)
    in_chans, height, width = data_cfg['input_size']
    arch = model_name(model)
    check_input_size(model, data_cfg, arch)
    # what this run actually uses, as train_args.json and the checkpoints record it
    cfg = dataclasses.replace(
        cfg,
        model=arch,
        num_classes=spec.num_classes,
        in_chans=in_chans,
        img_size=height if height == width else cfg.img_size,
        mixed_precision=acc.mixed_precision,
        output_dir=str(out),
        streaming=streaming,
        samples_per_epoch=samples_per_epoch(stream, cfg.samples_per_epoch, cfg.val_fraction) if stream else None,
    )
    return cfg, data_cfg, arch


def _resume_point(cfg: TrainConfig, *, acc: Accelerator, out: Path, meta_base: dict) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from and its verified meta (None, None for a fresh start)."""
    with acc.main_process_first():
        resume_dir = find_resume_checkpoint(cfg, out)
    resume_meta = None
    if resume_dir is None and (out / CHECKPOINTS_DIR / LAST / CHECKPOINT_META).is_file():
        logger.warning('%s holds a checkpoint; --overwrite: starting afresh replaces it', out)
    if resume_dir is not None:
        resume_meta = verify_checkpoint(resume_dir)
        expected = {**meta_base, 'world_size': acc.num_processes}
        check_resumable(resume_dir, resume_meta, expected, dataclasses.asdict(cfg))
        was = (resume_meta.get('config') or {}).get('workers')
        if resume_meta.get('position') and was is not None and was != cfg.workers:
            raise ResumeMismatchError(
                f'{resume_dir} stopped inside an epoch of streamed data read by --workers {was}; the order of the '
                f'examples depends on it: resume with --workers {was} (got {cfg.workers})'
            )
        if acc.is_main_process:
            repair_best(out / CHECKPOINTS_DIR, resume_dir, resume_meta)
        acc.wait_for_everyone()
    return resume_dir, resume_meta


def _build_run(
    cfg: TrainConfig, *, acc: Accelerator, out: Path, model: torch.nn.Module, data: _Data, data_cfg: dict
) -> tuple[_Run, int, int]:
    """Loaders, optimizer, schedule, EMA and loss, prepared by Accelerate: the run, its epochs, updates per epoch."""
    spec, stream, val_split, train_split = data.spec, data.stream, data.val, data.train
    in_chans = data_cfg['input_size'][0]
    train_tf, eval_tf = build_transforms(cfg, data_cfg)
    loader_kwargs = {
        'num_workers': cfg.workers,
        'persistent_workers': cfg.workers > 0,
        'pin_memory': acc.device.type == 'cuda',
    }
    val_loader = torch.utils.data.DataLoader(
        ImageClassificationDataset(val_split, eval_tf, in_chans, spec.name),
        batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        shuffle=False,
        **loader_kwargs,
    )
    if acc.num_processes > 1:
        keep_grad_strides(model)  # before DDP wraps it: DDP warns on every rank otherwise
    optimizer = create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, layer_decay=cfg.layer_decay
    )
    if stream is not None:  # each process reads its own data slots: not split again by Accelerate
        train_loader = StreamBatches(
            stream,
            train_tf,
            in_chans=in_chans,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            rank=acc.process_index,
            num_processes=acc.num_processes,
            accum=cfg.grad_accum_steps,
            samples=cfg.samples_per_epoch,
            workers=cfg.workers,
            buffer_size=cfg.shuffle_buffer,
            device=acc.device,
        )
        model, optimizer, val_loader = acc.prepare(model, optimizer, val_loader)
        logger.info(
            'streaming: %d examples per epoch in %d data slots (%s), %d micro-batches per slot',
            cfg.samples_per_epoch,
            train_loader.num_slots,
            describe_slots(stream.num_shards, train_loader.num_slots),
            train_loader.steps,
        )
    else:
        train_loader = torch.utils.data.DataLoader(
            ImageClassificationDataset(train_split, train_tf, in_chans, spec.name),
            batch_size=cfg.batch_size,
            shuffle=True,
            drop_last=True,  # mixup needs even batches; equal batches keep the ranks in step
            **loader_kwargs,
        )
        model, optimizer, train_loader, val_loader = acc.prepare(model, optimizer, train_loader, val_loader)
        if len(train_loader) == 0:
            raise DataError(
                f'the train split has {spec.num_train} rows: not one full batch of {cfg.batch_size} per process '
                f'({acc.num_processes} processes); lower --batch-size'
            )
    updates_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)  # len() is per process after prepare
    scheduler, num_epochs = create_scheduler_v2(
        optimizer,
        sched=cfg.sched,
        num_epochs=cfg.epochs,
        warmup_epochs=cfg.warmup_epochs,
        warmup_lr=cfg.warmup_lr,
        min_lr=cfg.min_lr,
        step_on_epochs=False,
        updates_per_epoch=updates_per_epoch,
    )
    ema = ModelEmaV3(acc.unwrap_model(model), decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema else None
    acc.register_for_checkpointing(scheduler, *([ema] if ema is not None else []))
    mixup, loss_fn = build_loss(cfg, spec.num_classes)
    run = _Run(
        cfg=cfg,
        accelerator=acc,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        val_loader=val_loader,
        ema=ema,
        mixup=mixup,
        loss_fn=loss_fn,
        label_names=spec.label_names,
        out=out,
    )
    return run, num_epochs, updates_per_epoch


def _restore(run: _Run, *, resume_dir: Path | None, resume_meta: dict | None) -> list[dict]:
    """The resumed state loaded into ``run`` (weights, optimizer, scheduler, EMA, RNG, position) and the metrics
    history so far, written back to ``metrics.jsonl``."""
    acc, out = run.accelerator, run.out
    metrics_path = out / METRICS
    history: list[dict] = []
    if resume_meta is not None:
        check_rng_state(resume_dir, acc.process_index)  # load_state would skip a bad one with an INFO line
        try:
            acc.load_state(str(resume_dir))  # weights, optimizer, scheduler, EMA, RNG of every process
        except Exception as e:  # verified files that still do not load: say which folder and what to do
            reason = (str(e).strip().splitlines() or [''])[0]
            raise CheckpointError(
                f'cannot load checkpoint {resume_dir}: {type(e).__name__}: {reason}. {ways_out(resume_dir)}'
            ) from e
        run.epoch, run.num_updates = resume_meta['epoch'], resume_meta['num_updates']
        run.best_top1, run.best_epoch = resume_meta['best_top1'], resume_meta['best_epoch']
        run.resume_position = resume_meta.get('position')
        history = _resume_history(metrics_path, resume_meta)
        logger.info('resumed from %s at epoch %d (update %d)', resume_dir, run.epoch, run.num_updates)
    if acc.is_main_process:
        _write_metrics(metrics_path, history)
    return history


def _train_epochs(s: _Setup) -> tuple[dict | None, dict | None]:
    """The epochs left (up to ``--stop-after-epoch``), a checkpoint after each; the last validation metrics."""

    run = s.run
    cfg, acc, out, history = run.cfg, run.accelerator, run.out, s.history
    arch, spec, num_epochs, metrics_path = s.arch, s.spec, s.num_epochs, out / METRICS
    model, train_loader, meta_base, updates_per_epoch = run.model, run.train_loader, s.meta_base, s.updates_per_epoch
    global_batch = cfg.batch_size * acc.num_processes * cfg.grad_accum_steps
    logger.info(
        'training %s (%.2fM params) on %s: %d epochs x %d updates, global batch %d, %d process(es) on %s',
        arch,
        sum(p.numel() for p in acc.unwrap_model(model).parameters()) / 1e6,
        spec.name,
        num_epochs,
        updates_per_epoch,
        global_batch,
        acc.num_processes,
        acc.device,
    )
    images_per_epoch = len(train_loader) * cfg.batch_size * acc.num_processes
    done_in_epoch = run.resume_position['images'] if run.resume_position else 0
    bar = progress(
        total=num_epochs * images_per_epoch,
        initial=run.epoch * images_per_epoch + done_in_epoch,
        unit='img',
        unit_scale=True,
        enabled=acc.is_main_process,
    )
    stop_at = min(num_epochs, cfg.stop_after_epoch or num_epochs)
    final, final_ema = None, None
    ckpt_root = out / CHECKPOINTS_DIR

    def save_position(position: dict) -> None:  # a mid-epoch checkpoint of a stream: 'last' only, never 'best'
        meta = {
            **meta_base,
            'epoch': run.epoch,
            'num_updates': run.num_updates,
            'best_top1': run.best_top1,
            'best_epoch': run.best_epoch,
            'record': history[-1] if history else None,
            'history': history,
            'world_size': acc.num_processes,
            'config': dataclasses.asdict(cfg),
            'position': position,
        }
        save_checkpoint(acc, ckpt_root, LAST, meta)
        logger.info(
            'checkpoint at epoch %d, micro-batch %d (update %d)', run.epoch + 1, position['steps'], run.num_updates
        )

    run.save_position = save_position
    for epoch in range(run.epoch, stop_at):
        bar.set_description(f'epoch {epoch + 1}/{num_epochs}')
        epoch_start = time.perf_counter()
        train_stats = train_one_epoch(run, epoch, bar)
        final, final_ema = validate(run)
        run.scheduler.step(epoch + 1, final['top1'])  # a no-op for per-update schedules; plateau steps on top-1
        run.epoch = epoch + 1
        record = _epoch_record(run.epoch, train_stats, final, final_ema, time.perf_counter() - epoch_start)
        history.append(record)
        top1 = max(final['top1'], final_ema['top1'] if final_ema else -1.0)
        improved = top1 > run.best_top1
        if improved:
            run.best_top1, run.best_epoch = top1, run.epoch
        meta = {
            **meta_base,
            'epoch': run.epoch,
            'num_updates': run.num_updates,
            'best_top1': run.best_top1,
            'best_epoch': run.best_epoch,
            'record': record,
            'history': history,  # metrics.jsonl can be cut or emptied by a kill or a hand; this copy resumes
            'world_size': acc.num_processes,
            'config': dataclasses.asdict(cfg),
        }
        last = save_checkpoint(acc, ckpt_root, LAST, meta)
        if improved and acc.is_main_process:
            copy_checkpoint(last, ckpt_root / BEST)  # a kill before this is repaired on resume (repair_best)
        if acc.is_main_process:
            _write_metrics(metrics_path, history)
        if cfg.log_with:
            acc.log({k: v for k, v in record.items() if k != 'epoch'}, step=run.epoch)
        logger.info(
            'epoch %d/%d: train loss %.4f, val loss %.4f, top-1 %.2f%%, top-5 %.2f%%%s, %.0f img/s',
            run.epoch,
            num_epochs,
            record['train_loss'],
            record['val_loss'],
            record['val_top1'],
            record['val_top5'],
            f', EMA top-1 {record["ema_val_top1"]:.2f}%' if final_ema else '',
            record['images_per_s'],
        )
    bar.close()
    acc.wait_for_everyone()
    return final, final_ema


def _finish(s: _Setup, final: dict | None, final_ema: dict | None) -> dict:
    """The summary; when every epoch is done, the exported Hub-ready ``model/`` folder and its results."""
    run = s.run
    cfg, acc, out, history = run.cfg, run.accelerator, run.out, s.history
    arch, spec, num_epochs, data_cfg, started = s.arch, s.spec, s.num_epochs, s.data_cfg, s.started
    global_batch = cfg.batch_size * acc.num_processes * cfg.grad_accum_steps
    if final is None:  # nothing left to train (resumed a finished run): measure the weights as they are
        final, final_ema = validate(run)
    summary = {
        'model': arch,
        'best_top1': run.best_top1,
        'best_epoch': run.best_epoch,
        'epochs_done': run.epoch,
        'num_updates': run.num_updates,
        'output_dir': str(out),
        'model_dir': None,
        'split': spec.val_split,
        'val_source': spec.val_source,
    }
    if run.epoch < num_epochs:
        logger.info('stopped after epoch %d of %d; continue with --resume auto', run.epoch, num_epochs)
        summary.update({k: final[k] for k in ('top1', 'top5', 'loss')}, weights='model')
        acc.end_training()
        return summary

    use_ema = final_ema is not None and final_ema['top1'] > final['top1']
    chosen = final_ema if use_ema else final
    results = {
        'model': arch,
        'top1': chosen['top1'],
        'top5': chosen['top5'],
        'loss': chosen['loss'],
        'per_class': chosen['per_class'],
        'num_samples': chosen['num_samples'],
        'dataset': spec.name,
        'dataset_config': spec.config,
        'split': spec.val_split,
        'val_source': spec.val_source,
        'label_names': list(spec.label_names),
        'weights': 'ema' if use_ema else 'model',
        'model_top1': final['top1'],
        'ema_top1': final_ema['top1'] if final_ema else None,
        'best_top1': run.best_top1,
        'best_epoch': run.best_epoch,
        'epochs': run.epoch,
        'num_updates': run.num_updates,
        'input_size': list(data_cfg['input_size']),
        'world_size': acc.num_processes,
        'global_batch_size': global_batch,
        'mixed_precision': acc.mixed_precision,
        'images_per_s': round(sum(r['images_per_s'] for r in history) / max(len(history), 1), 2),
        'train_time_s': round(time.perf_counter() - started, 2),
    }
    if acc.is_main_process:
        model_dir = export_model(run, spec, data_cfg, chosen, results, history)
        logger.info(
            'done: %s top-1 %.2f%% (%s weights) on %s/%s; model folder %s',
            arch,
            results['top1'],
            results['weights'],
            spec.name,
            spec.val_split,
            model_dir,
        )
    acc.wait_for_everyone()
    acc.end_training()
    return {**summary, **{k: v for k, v in results.items() if k != 'label_names'}, 'model_dir': str(out / MODEL_DIR)}


# what a user can fix: one line on stderr and exit code 2, no traceback
USER_ERRORS = (
    DataError,
    ModelLoadError,  # UnknownModelError is one
    PretrainedWeightsNotFoundError,
    TrainConfigError,
    OutputDirError,
    ResumeMismatchError,
    CheckpointError,
    NonFiniteLossError,
)


def launch(cfg: TrainConfig) -> int:
    """One process of a training launch (``hybrid-zoo train``, or each process of ``accelerate launch -m
    hybrid_zoo.train``): logging by rank, :func:`fit`, and an exit code; rank 0 prints the run's summary as one JSON
    line on stdout.

    Returns:
        0 when the run finished or stopped as asked, 2 (the reason logged in one line) for :data:`USER_ERRORS`.
    """
    rank0 = int(os.environ.get('RANK', '0')) == 0
    setup_logging(QUIET if cfg.quiet else VERBOSE if cfg.verbose else NORMAL, rank0=rank0)
    try:
        result = fit(cfg)
    except USER_ERRORS as e:
        logger.error('%s', e)
        return 2
    if rank0:
        keys = ('model', 'top1', 'top5', 'weights', 'val_source', 'epochs_done', 'train_time_s', 'model_dir')
        print(json.dumps({k: result.get(k) for k in keys}))
    return 0
