"""Evaluate an image classifier on a dataset split: top-1 / top-5, per-class accuracy, a confusion-matrix PNG.

The model is any timm model: a folder written by ``hybrid-zoo train`` (``<output_dir>/model``), an ``hf-hub:`` id or a
registry name with pretrained weights. Runs on one process or many (``hybrid-zoo eval`` under ``accelerate launch``);
predictions are gathered with ``gather_for_metrics``, so the padding of the last batch is not counted twice.

Models are created and their weights loaded by ``hybrid_zoo.factory`` (one checked loader for every entry point);
its names are re-exported here for the trainer, which imports them from this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from sklearn.metrics import confusion_matrix
from timm.data import create_transform
from torch import nn

from hybrid_zoo.atomic import sha256_file, write_json_atomic
from hybrid_zoo.factory import (  # noqa: F401  (re-exported: hybrid_zoo.train.loop imports them from here)
    HUB_PREFIXES,
    ModelLoadError,
    UnknownModelError,
    check_model_name,
    create_model,
    load_model,
    model_name,
    resolve_model_source,
)
from hybrid_zoo.logs import progress
from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError
from hybrid_zoo.run_files import CONFUSION_MATRIX, EVAL_RESULTS, WEIGHTS_NAME
from hybrid_zoo.train.data import (
    EMBEDDED_CACHE,
    DataError,
    ImageClassificationDataset,
    check_labels,
    load_eval_split,
    model_data_config,
)
from hybrid_zoo.train.plotting import plot_confusion_matrix

logger = logging.getLogger(__name__)

# what a user can fix (a wrong path, split or model name): the command line reports them in one line, exit code 2
USER_ERRORS = (DataError, ModelLoadError, PretrainedWeightsNotFoundError)  # UnknownModelError is a ModelLoadError

# ----------------------------------------------------------------------------------------------------------------------
# Predictions and metrics


@dataclass
class Predictions:
    """Gathered over all processes: ``topk`` (N, k) class indices, ``targets`` (N,), ``loss`` (N,) cross-entropy."""

    topk: torch.Tensor
    targets: torch.Tensor
    loss: torch.Tensor


@torch.no_grad()
def predict(model: torch.nn.Module, loader, accelerator, *, k: int = 5, channels_last: bool = False) -> Predictions:
    """Run ``model`` over a prepared loader and gather top-k predictions, targets and per-sample loss."""

    was_training = model.training
    model.eval()
    tops, targets, losses = [], [], []
    bar = progress(total=len(loader), desc='eval', unit='batch', leave=False, enabled=accelerator.is_main_process)
    for x, y in loader:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with accelerator.autocast():
            logits = model(x)
        logits = logits.float()
        loss = F.cross_entropy(logits, y, reduction='none')  # (B,)
        top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices  # (B, num_classes) -> (B, k)
        top, y, loss = accelerator.gather_for_metrics((top, y, loss))
        tops.append(top.cpu())
        targets.append(y.cpu())
        losses.append(loss.cpu())
        bar.update()
    bar.close()
    model.train(was_training)
    return Predictions(torch.cat(tops), torch.cat(targets), torch.cat(losses))


def classification_metrics(pred: Predictions, label_names: list[str]) -> dict:
    """Top-1 / top-5 (percent), mean loss, per-class accuracy (percent, ``None`` for absent classes), confusion matrix."""

    n = len(label_names)
    top1 = pred.topk[:, 0]
    hit5 = (pred.topk == pred.targets[:, None]).any(dim=1)  # (N, k) -> (N,)
    matrix = confusion_matrix(pred.targets.numpy(), top1.numpy(), labels=np.arange(n))
    support = matrix.sum(axis=1)
    per_class = {
        name: (round(100.0 * matrix[i, i] / support[i], 4) if support[i] else None)
        for i, name in enumerate(label_names)
    }
    return {
        'top1': round(100.0 * (top1 == pred.targets).float().mean().item(), 4),
        'top5': round(100.0 * hit5.float().mean().item(), 4),
        'loss': round(pred.loss.mean().item(), 6),
        'num_samples': int(pred.targets.numel()),
        'per_class': per_class,
        'confusion_matrix': matrix.tolist(),
    }


def _label_names(model: torch.nn.Module, dataset_names: list[str] | None) -> list[str]:
    n = model.num_classes
    model_names = model.pretrained_cfg.get('label_names')
    if isinstance(model_names, dict):  # timm allows {index: name} when there are gaps
        model_names = [str(model_names.get(i, model_names.get(str(i), i))) for i in range(n)]
    if model_names and len(model_names) == n:
        if dataset_names and list(dataset_names) != list(model_names)[: len(dataset_names)]:
            logger.warning(
                'the model was trained with classes %s but the dataset names %s; labels are compared by index',
                list(model_names),
                list(dataset_names),
            )
        return list(model_names)
    names = list(dataset_names or [])[:n]
    return names + [str(i) for i in range(len(names), n)]


def _fresh_accelerator(**kwargs: Any):
    """An ``Accelerator``; the per-run part of accelerate's global state is reset first so calls can differ."""

    # AcceleratorState refuses a second, different mixed_precision in one process; the process group
    # (PartialState) is kept
    AcceleratorState._reset_state()
    GradientState._reset_state()
    return Accelerator(**kwargs)


def evaluate(
    model_or_path: torch.nn.Module | str,
    dataset: Any,
    split: str = 'test',
    *,
    dataset_config: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    batch_size: int = 128,
    workers: int = 0,
    max_samples: int | None = None,
    img_size: int | None = None,
    output_dir: str | os.PathLike | None = None,
    mixed_precision: str | None = None,
    cpu: bool = False,
    embedded_cache: str | os.PathLike = EMBEDDED_CACHE,
    allow_pickle: bool = False,
) -> dict:
    """Evaluate a classifier on one split of a dataset.

    Args:
        model_or_path: A timm model, a folder in ``save_for_hf`` layout, an ``hf-hub:`` id or ``arch.tag``.
        dataset: A dataset source (see ``hybrid_zoo.train.data.open_dataset``) or a loaded ``Dataset``/``DatasetDict``.
        split: Split to evaluate.
        dataset_config: Hub dataset configuration.
        image_column: Image column (detected when ``None``).
        label_column: Label column (detected when ``None``).
        batch_size: Batch size per process.
        workers: DataLoader worker processes.
        max_samples: Evaluate a seeded random subset of this size.
        img_size: Input resolution; default: the model's own (from its config).
        output_dir: When given, ``eval_results.json`` and ``confusion_matrix.png`` are written there.
        mixed_precision: ``'no'``, ``'bf16'`` or ``'fp16'`` (default: the ``accelerate launch`` setting).
        cpu: Run on CPU even if an accelerator is present.
        embedded_cache: Where ``dataset='default'`` is prepared.
        allow_pickle: Accept a model whose weights exist only as a pickle (read with ``torch.load(weights_only=True)``);
            by default such a model is refused with ``PickleRefusedError`` before anything is unpickled.

    Returns:
        ``top1``, ``top5`` (percent), ``loss``, ``num_samples``, ``per_class`` (class name -> percent),
        ``confusion_matrix``, ``label_names``, ``dataset``, ``split``, ``model``.
    """

    accelerator = _fresh_accelerator(cpu=cpu or _cpu_only_multiprocess(), mixed_precision=mixed_precision)
    # a local model folder first (reading it is cheap, and an unusable one fails before a dataset is prepared); a Hub
    # model after the data, so a mistyped dataset path fails before any weights are downloaded
    local = isinstance(model_or_path, str) and (model_or_path.startswith('local-dir:') or os.path.isdir(model_or_path))
    model = load_model(model_or_path, allow_pickle=allow_pickle) if local else None
    part, dataset_names, name = load_eval_split(
        dataset,
        split,
        config=dataset_config,
        image_column=image_column,
        label_column=label_column,
        max_samples=max_samples,
        embedded_cache=embedded_cache,
    )
    if model is None:
        model = (
            load_model(model_or_path, allow_pickle=allow_pickle) if isinstance(model_or_path, str) else model_or_path
        )
    label_names = _label_names(model, dataset_names)
    check_labels(part, model.num_classes, name)
    data_cfg = model_data_config(model, img_size)
    transform = create_transform(**data_cfg)
    loader = torch.utils.data.DataLoader(
        ImageClassificationDataset(part, transform, data_cfg['input_size'][0], name),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
    )
    prepared, loader = accelerator.prepare(model, loader)
    metrics = classification_metrics(predict(prepared, loader, accelerator), label_names)
    results = {
        **metrics,
        'label_names': label_names,
        'dataset': name,
        'split': split,
        'model': model_or_path if isinstance(model_or_path, str) else model_name(model),
        'input_size': list(data_cfg['input_size']),
    }
    weights = Path(model_or_path) / WEIGHTS_NAME if isinstance(model_or_path, str) else None
    if weights is not None and weights.is_file():  # which weights were measured: a card shows the score only for them
        results['weights_sha256'] = sha256_file(weights)
    if output_dir is not None and accelerator.is_main_process:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / EVAL_RESULTS, results)
        title = f'{results["model"]} on {name}/{split}: top-1 {results["top1"]:.2f}%'
        plot_confusion_matrix(metrics['confusion_matrix'], label_names, out / CONFUSION_MATRIX, title)
        logger.info('wrote %s and %s', out / EVAL_RESULTS, out / CONFUSION_MATRIX)
    accelerator.wait_for_everyone()
    return results


def _cpu_only_multiprocess() -> bool:
    # accelerate picks the gloo CPU backend only with cpu=True; without it, `accelerate launch --multi_gpu` on a
    # machine with no GPU silently runs independent single-process jobs
    return not torch.cuda.is_available() and int(os.environ.get('WORLD_SIZE', '1')) > 1


# ----------------------------------------------------------------------------------------------------------------------
# Deployed forms: calibration images, and what a form costs in accuracy


def eval_loader(model: nn.Module, dataset: str, split: str, samples: int | None, batch_size: int = 64):
    """Batches ``(x, y)`` of ``split`` of ``dataset`` (a seeded subset of ``samples`` rows, or all) as the model sees
    them at evaluation: its data config and eval transform, in one process."""
    part, _, name = load_eval_split(dataset, split, max_samples=samples, seed=0)
    data_cfg = model_data_config(model)
    ds = ImageClassificationDataset(part, create_transform(**data_cfg), data_cfg['input_size'][0], name)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def calibration_batches(model: nn.Module, dataset: str, split: str = 'train', samples: int = 256) -> list[torch.Tensor]:
    """``samples`` images (a seeded random subset) of ``split``, transformed for ``model``: int8 calibration data."""
    loader = eval_loader(model, dataset, split, samples, batch_size=32)
    return [x for x, _ in progress(loader, desc=f'calibration images ({split})', unit='batch')]


def compare_accuracy(
    model: nn.Module,
    runs: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    dataset: str,
    split: str = 'test',
    samples: int | None = None,
) -> dict:
    """Top-1 (%) of the fp32 eager model and of each deployed form of it in ``runs`` on ``split``, in one pass over
    the data, and how often each form's top-1 class agrees with fp32's (the price of an int8 form, for example).
    ``runs`` maps a key prefix to a form (a callable from a batch to logits, such as ``hybrid_zoo.deploy.build(...)
    .run``): its figures are ``<prefix>int8_top1``, ``<prefix>top1_change`` and ``<prefix>top1_agreement``."""
    model = model.eval()
    fp32, correct, agree, total = 0, dict.fromkeys(runs, 0), dict.fromkeys(runs, 0), 0
    loader = eval_loader(model, dataset, split, samples)
    for x, y in progress(loader, desc=f'accuracy of {len(runs) + 1} forms on {split}', unit='batch'):
        with torch.inference_mode():
            a = model(x).argmax(1)
        fp32 += int((a == y).sum())
        total += len(y)
        for prefix, run in runs.items():
            b = run(x).argmax(1)
            correct[prefix] += int((b == y).sum())
            agree[prefix] += int((a == b).sum())
    out = {'split': split, 'images': total, 'fp32_top1': round(100 * fp32 / total, 3)}
    for p in runs:
        out[f'{p}int8_top1'] = round(100 * correct[p] / total, 3)
        out[f'{p}top1_change'] = round(100 * (correct[p] - fp32) / total, 3)
        out[f'{p}top1_agreement'] = round(100 * agree[p] / total, 3)
    return out
