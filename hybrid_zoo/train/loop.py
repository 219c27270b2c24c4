"""Train or fine-tune any timm model on any Hugging Face image dataset with Accelerate, one process or many.

The same code runs ``python -m hybrid_zoo.train.loop`` (one process) and ``accelerate launch -m hybrid_zoo.train.loop``
(N GPUs, N machines, or N CPU processes over gloo). The pieces are the libraries' own: timm builds the model,
transforms, mixup, optimizer (``create_optimizer_v2``), schedule (``create_scheduler_v2``, stepped per update) and
EMA (``ModelEmaV3``); Accelerate does devices, processes, mixed precision, gradient accumulation, checkpoint state
and trackers; ``datasets`` holds the data.

Output directory::

    <output_dir>/checkpoints/last/   accelerate save_state + meta.json, replaced atomically every epoch
    <output_dir>/checkpoints/best/   the same, for the best validation top-1 so far
    <output_dir>/metrics.jsonl       one JSON line per epoch
    <output_dir>/model/              Hub-ready: config.json (timm save_for_hf), model.safetensors, results.json,
                                     train_args.json, training_curves.png, confusion_matrix.png

``TrainConfig`` holds every option; it and the command line generated from its fields live in ``hybrid_zoo_cli.train``
(no torch, so ``--help`` starts at once) and are re-exported here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybrid_zoo.atomic import recover_dir, replace_dir, temp_dir_beside
from hybrid_zoo.train.data import (
    DataError,
    ImageClassificationDataset,
    load_train_val,
    model_data_config,
)
from hybrid_zoo.train.evaluate import (
    UnknownModelError,
    _cpu_only_multiprocess,
    _fresh_accelerator,
    classification_metrics,
    create_model,
    import_plugins,
    model_name,
    predict,
    resolve_model_source,
)
from hybrid_zoo_cli.train import KeyValueAction, TrainConfig, build_parser, config_from_args  # noqa: F401 (re-exported)

logger = logging.getLogger('hybrid_zoo.train.loop')  # not __name__: that is '__main__' under python -m

CHECKPOINT_FORMAT = 1


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is left as it was."""


class ResumeMismatchError(ValueError):
    """A checkpoint made for another model or other data."""


# ----------------------------------------------------------------------------------------------------------------------
# Building blocks


def build_model(cfg: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The model to train: ``cfg.model`` (random init) or ``cfg.pretrained`` weights, sized for the data."""
    import_plugins()
    name, pretrained = resolve_model_source(cfg.model, cfg.pretrained)
    kwargs = dict(cfg.model_kwargs, num_classes=num_classes)
    for key in ('in_chans', 'drop_rate', 'drop_path_rate'):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    model = create_model(name, pretrained=pretrained, img_size=cfg.img_size, **kwargs)
    if pretrained and name.startswith(('hf-hub:', 'local-dir:')) and model_name(model) != cfg.model:
        logger.info('architecture %r comes from %s (--model %r ignored)', model_name(model), name, cfg.model)
    if cfg.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_transforms(cfg: TrainConfig, data_cfg: dict) -> tuple[Any, Any]:
    """timm train and eval transforms for the model's data config."""
    from timm.data import create_transform

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
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

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
# Checkpoints


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + '\n')


def save_checkpoint(accelerator, root: Path, name: str, meta: dict) -> Path:
    """``save_state`` into a temporary sibling folder on every process, then publish it as ``root/name`` atomically."""
    final = root / name
    tmp = root / f'.{name}.tmp'  # one fixed name, so every process writes into the same folder
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(tmp / 'meta.json', meta)
        replace_dir(tmp, final)
    accelerator.wait_for_everyone()
    return final


def _copy_checkpoint(src: Path, dst: Path) -> None:
    """Publish a copy of ``src`` as ``dst``; hard links suffice because checkpoint files are never rewritten in place."""
    tmp = temp_dir_beside(dst)
    tmp.rmdir()

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, tmp, copy_function=link)
    replace_dir(tmp, dst)


def find_resume_checkpoint(cfg: TrainConfig) -> Path | None:
    """The checkpoint folder ``cfg.resume`` points to (``None``: start fresh)."""
    if not cfg.resume:
        return None
    if cfg.resume == 'auto':
        path = recover_dir(cfg.resolved_output_dir() / 'checkpoints' / 'last')
        if not (path / 'meta.json').is_file():
            logger.info('--resume auto: no checkpoint in %s, starting from scratch', path)
            return None
        return path
    path = recover_dir(Path(cfg.resume))
    if not (path / 'meta.json').is_file():
        raise ResumeMismatchError(f'--resume {cfg.resume}: not a checkpoint folder (no meta.json in {path})')
    return path


def check_resumable(path: Path, meta: dict, expected: dict) -> None:
    """Refuse (``ResumeMismatchError``) a checkpoint whose model, classes, channels, EMA or data differ from this run."""
    problems = []
    for key in ('model', 'num_classes', 'in_chans', 'ema'):
        if meta.get(key) != expected[key]:
            problems.append(f'{key}: checkpoint {meta.get(key)!r}, this run {expected[key]!r}')
    for key, value in expected['dataset'].items():
        if meta.get('dataset', {}).get(key) != value:
            problems.append(f'dataset {key}: checkpoint {meta.get("dataset", {}).get(key)!r}, this run {value!r}')
    if problems:
        raise ResumeMismatchError(
            f'refusing to resume from {path}: it was made for a different run ({"; ".join(problems)}). '
            'Use the same --model and data as that run, or a new --output-dir to start afresh.'
        )


# ----------------------------------------------------------------------------------------------------------------------
# The training loop


@dataclass
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
    epoch: int = 0
    num_updates: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0


def _check_finite(run: _Run, loss: torch.Tensor, epoch: int, step: int) -> None:
    # every process takes part, so all of them stop together instead of leaving the others waiting in all-reduce
    bad = run.accelerator.reduce((~torch.isfinite(loss.detach())).float(), reduction='max')
    if bad.item():
        last = run.out / 'checkpoints' / 'last'
        kept = (
            f'The last good checkpoint {last} (epoch {run.epoch}) is untouched'
            if (last / 'meta.json').is_file()
            else 'No checkpoint had been written yet'
        )
        raise NonFiniteLossError(
            f'training loss is {loss.item()} at epoch {epoch + 1}, step {step} (update {run.num_updates}): stopped. '
            f'{kept}. Try a lower --lr, --clip-grad 1.0, more --warmup-epochs, or --mixed-precision no/bf16.'
        )


def train_one_epoch(run: _Run, epoch: int, bar) -> dict:
    """One pass over the training data; returns the mean loss, throughput and time of the epoch."""
    acc, cfg = run.accelerator, run.cfg
    run.model.train()
    run.train_loader.set_epoch(epoch)  # the sampler's order is a function of (seed, epoch): resumable
    loss_sum = torch.zeros((), device=acc.device)
    steps, images, lr_sum = 0, 0, 0.0
    start = time.perf_counter()
    for step, (x, y) in enumerate(run.train_loader):
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if run.mixup is not None:
            x, y = run.mixup(x, y)  # y: (B,) int -> (B, num_classes) soft targets
        with acc.accumulate(run.model):
            loss = run.loss_fn(run.model(x), y)
            _check_finite(run, loss, epoch, step)
            acc.backward(loss)
            if acc.sync_gradients and cfg.clip_grad:
                acc.clip_grad_norm_(run.model.parameters(), cfg.clip_grad)
            run.optimizer.step()  # a no-op on accumulation steps (Accelerate's optimizer wrapper)
            run.optimizer.zero_grad()
        if acc.sync_gradients:
            lr_sum += run.optimizer.param_groups[0]['lr']  # the lr this update used
            run.num_updates += 1
            run.scheduler.step_update(num_updates=run.num_updates)
            if run.ema is not None:
                run.ema.update(acc.unwrap_model(run.model), step=run.num_updates)
        loss_sum += loss.detach()
        steps += 1
        batch = x.shape[0] * acc.num_processes
        images += batch
        bar.update(batch)
        if step % 10 == 0:
            bar.set_postfix(loss=f'{loss.item():.3f}', lr=f'{run.optimizer.param_groups[0]["lr"]:.2e}', refresh=False)
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
    """Epoch records up to the resumed epoch (a killed run may have logged one more, or one fewer)."""
    records = []
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                rec = json.loads(line)
                if rec.get('epoch', 0) <= upto_epoch:
                    records.append(rec)
    if last_record and not any(r['epoch'] == last_record['epoch'] for r in records):
        records.append(last_record)
    return records


def _tracker_config(cfg: TrainConfig) -> dict:
    # trackers (tensorboard hparams) take scalars and strings only
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in dataclasses.asdict(cfg).items()}


def _tag(dataset_name: str) -> str:
    return re.sub(r'[^a-z0-9]+', '_', dataset_name.split('/')[-1].lower()).strip('_') or 'custom'


def export_model(run: _Run, spec, data_cfg: dict, final: dict, results: dict, history: list[dict]) -> Path:
    """Write ``<output_dir>/model``: timm ``save_for_hf`` files, results, args and plots; published atomically."""
    from timm.models import save_for_hf

    from hybrid_zoo.train.plotting import plot_confusion_matrix, plot_training_curves

    net = (
        run.ema.module
        if results['weights'] == 'ema'
        else run.accelerator.unwrap_model(run.model, keep_torch_compile=False)
    )
    # safetensors wants contiguous tensors on CPU: undo channels_last on a copy
    net = copy.deepcopy(net).float().cpu().to(memory_format=torch.contiguous_format)
    dst = run.out / 'model'
    tmp = temp_dir_beside(dst)
    model_config = {'label_names': list(run.label_names), 'pretrained_cfg': {'tag': _tag(spec.name)}}
    save_for_hf(net, tmp, model_config=model_config, safe_serialization=True, data_config=data_cfg)
    (tmp / 'pytorch_model.bin').unlink(missing_ok=True)  # safetensors only
    _write_json(tmp / 'results.json', results)
    _write_json(tmp / 'train_args.json', dataclasses.asdict(run.cfg))
    title = f'{results["model"]} on {spec.name}'
    plot_training_curves(history, tmp / 'training_curves.png', title=title)
    plot_confusion_matrix(
        final['confusion_matrix'], run.label_names, tmp / 'confusion_matrix.png', f'{title} ({spec.val_split})'
    )
    replace_dir(tmp, dst)
    return dst


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
        ResumeMismatchError: ``cfg.resume`` points at a checkpoint of another model or other data.
        NonFiniteLossError: the loss became NaN/inf; the last good checkpoint is kept.
    """
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from timm.optim import create_optimizer_v2
    from timm.scheduler import create_scheduler_v2
    from timm.utils import ModelEmaV3
    from tqdm.auto import tqdm

    import_plugins()
    out = cfg.resolved_output_dir()
    started = time.perf_counter()
    acc = _fresh_accelerator(
        cpu=cfg.cpu or _cpu_only_multiprocess(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.log_with,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / 'logs')),
        # a seedable sampler: the shuffle order depends on (seed, epoch) only, so a resumed run sees the same order
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
        dynamo_backend='inductor' if cfg.compile else None,
    )
    if cfg.mixed_precision == 'fp16' and acc.device.type == 'cpu':
        logger.warning('fp16 autocast does nothing on CPU (training stays fp32); use bf16 or no')
    if cfg.mixup > 0 or cfg.cutmix > 0:
        if cfg.batch_size % 2:
            raise ValueError(f'mixup/cutmix need an even --batch-size, got {cfg.batch_size}')
    set_seed(cfg.seed)

    with acc.main_process_first():  # the main process prepares/downloads and caches first
        train_split, val_split, spec = load_train_val(
            cfg.dataset,
            config=cfg.dataset_config,
            train_split=cfg.train_split,
            val_split=cfg.val_split,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            image_column=cfg.image_column,
            label_column=cfg.label_column,
            num_classes=cfg.num_classes,
            max_train_samples=cfg.max_train_samples,
            max_val_samples=cfg.max_val_samples,
            embedded_cache=cfg.embedded_cache,
        )
    model = build_model(cfg, spec.num_classes)
    data_cfg = model_data_config(model, cfg.img_size, cfg.in_chans)
    in_chans = data_cfg['input_size'][0]
    arch = model_name(model)
    cfg = dataclasses.replace(cfg, num_classes=spec.num_classes, in_chans=in_chans, output_dir=str(out))
    meta_base = {
        'format': CHECKPOINT_FORMAT,
        'model': arch,
        'num_classes': spec.num_classes,
        'in_chans': in_chans,
        'ema': cfg.ema,
        'dataset': spec.identity(),
    }
    with acc.main_process_first():
        resume_dir = find_resume_checkpoint(cfg)
    resume_meta = None
    if resume_dir is None and (out / 'checkpoints' / 'last' / 'meta.json').is_file():
        logger.warning('%s holds a checkpoint; starting afresh replaces it (--resume auto continues it)', out)
    if resume_dir is not None:
        resume_meta = json.loads((resume_dir / 'meta.json').read_text())
        check_resumable(resume_dir, resume_meta, meta_base)

    train_tf, eval_tf = build_transforms(cfg, data_cfg)
    loader_kwargs = {
        'num_workers': cfg.workers,
        'persistent_workers': cfg.workers > 0,
        'pin_memory': acc.device.type == 'cuda',
    }
    train_loader = torch.utils.data.DataLoader(
        ImageClassificationDataset(train_split, train_tf, in_chans, spec.name),
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,  # mixup needs even batches; equal batches keep the ranks in step
        **loader_kwargs,
    )
    val_loader = torch.utils.data.DataLoader(
        ImageClassificationDataset(val_split, eval_tf, in_chans, spec.name),
        batch_size=cfg.eval_batch_size or 2 * cfg.batch_size,
        shuffle=False,
        **loader_kwargs,
    )
    optimizer = create_optimizer_v2(
        model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum, layer_decay=cfg.layer_decay
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
        cfg, acc, model, optimizer, scheduler, train_loader, val_loader, ema, mixup, loss_fn, spec.label_names, out
    )

    metrics_path = out / 'metrics.jsonl'
    history: list[dict] = []
    if resume_meta is not None:
        acc.load_state(str(resume_dir))  # weights, optimizer, scheduler, EMA, RNG of every process
        run.epoch, run.num_updates = resume_meta['epoch'], resume_meta['num_updates']
        run.best_top1, run.best_epoch = resume_meta['best_top1'], resume_meta['best_epoch']
        history = _read_metrics(metrics_path, run.epoch, resume_meta.get('record'))
        logger.info('resumed from %s at epoch %d (update %d)', resume_dir, run.epoch, run.num_updates)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(''.join(json.dumps(r) + '\n' for r in history))
    if cfg.log_with:
        acc.init_trackers(out.name, config=_tracker_config(cfg))

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
    bar = tqdm(
        total=num_epochs * images_per_epoch,
        initial=run.epoch * images_per_epoch,
        unit='img',
        unit_scale=True,
        dynamic_ncols=True,
        disable=not acc.is_main_process,
    )
    stop_at = min(num_epochs, cfg.stop_after_epoch or num_epochs)
    final, final_ema = None, None
    ckpt_root = out / 'checkpoints'
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
            'world_size': acc.num_processes,
        }
        last = save_checkpoint(acc, ckpt_root, 'last', meta)
        if improved and acc.is_main_process:
            _copy_checkpoint(last, ckpt_root / 'best')
        if acc.is_main_process:
            with metrics_path.open('a') as f:
                f.write(json.dumps(record) + '\n')
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
    return {**summary, **{k: v for k, v in results.items() if k != 'label_names'}, 'model_dir': str(out / 'model')}


def main(argv: list[str] | None = None) -> int:
    cfg = config_from_args(argv)
    rank0 = int(os.environ.get('RANK', '0')) == 0
    logging.basicConfig(
        level=logging.INFO if rank0 else logging.WARNING, format='%(asctime)s %(levelname)s %(name)s: %(message)s'
    )
    if not rank0:
        import datasets

        datasets.disable_progress_bars()
    try:
        result = fit(cfg)
    except (DataError, UnknownModelError, ResumeMismatchError, NonFiniteLossError) as e:
        logger.error('%s', e)
        return 2
    if rank0:
        keys = ('model', 'top1', 'top5', 'weights', 'val_source', 'epochs_done', 'train_time_s', 'model_dir')
        print(json.dumps({k: result.get(k) for k in keys}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
