"""Evaluate an image classifier on a dataset split: top-1 / top-5, per-class accuracy, a confusion-matrix PNG.

The model is any timm model: a folder written by ``hybrid-zoo train`` (``<output_dir>/model``), an ``hf-hub:`` id or a
registry name with pretrained weights. Runs on one process or many (``accelerate launch -m hybrid_zoo.train.evaluate``);
predictions are gathered with ``gather_for_metrics``, so the padding of the last batch is not counted twice.

Model loading lives here too (``load_model``, ``check_model_name``): ``train`` uses the same code.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hybrid_zoo.train.data import (
    EMBEDDED_CACHE,
    DataError,
    ImageClassificationDataset,
    check_labels,
    load_eval_split,
    model_data_config,
)
from hybrid_zoo_cli.evaluate import build_parser

logger = logging.getLogger('hybrid_zoo.train.evaluate')  # not __name__: that is '__main__' under python -m

HUB_PREFIXES = ('hf-hub:', 'hf_hub:', 'local-dir:')


class UnknownModelError(ValueError):
    """A model name timm does not know; the message suggests close names."""


def import_plugins() -> None:
    """Register the hybrid_zoo models in timm (a no-op once the package is imported)."""
    try:
        import hybrid_zoo  # noqa: F401  (registers the models)
    except ImportError as e:  # keep other timm models usable while the model package is broken
        logger.warning('hybrid_zoo models are not registered: %s', e)


def check_model_name(name: str) -> None:
    """Raise ``UnknownModelError`` with the closest registered names when ``name`` (``arch`` or ``arch.tag``) is unknown."""
    import timm

    arch = name.split('.', 1)[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    raise UnknownModelError(
        f'unknown model {arch!r}.{hint} (timm.list_models("*pattern*") lists the registered names; '
        'models of a plugin package are registered when it is imported)'
    )


def resolve_model_source(model: str, pretrained: str | bool | None) -> tuple[str, bool]:
    """The ``timm.create_model`` name and ``pretrained`` flag for ``--model`` / ``--pretrained``.

    Args:
        model: Registry name (``convformer_tiny``), ignored when ``pretrained`` names a Hub repo or a folder.
        pretrained: ``None``/``False``: random init. ``True`` or ``'default'``: the registry's default weights.
            ``'hf-hub:org/name'``, ``'local-dir:/path'`` or an existing folder: those weights (the architecture comes
            from their ``config.json``). ``'arch.tag'``: that registry tag. A bare ``'tag'``: ``model.tag``.

    Returns:
        ``(name, pretrained)`` for ``timm.create_model``.
    """
    if not pretrained:
        return model, False
    if pretrained is True or pretrained == 'default':
        return model, True
    if pretrained.startswith(HUB_PREFIXES):
        return pretrained, True
    if os.path.isdir(pretrained):
        return f'local-dir:{os.path.abspath(pretrained)}', True
    if '/' in pretrained:
        raise UnknownModelError(f"--pretrained {pretrained!r}: write a Hub repo as 'hf-hub:{pretrained}'")
    return (pretrained if '.' in pretrained else f'{model}.{pretrained}'), True


def create_model(name: str, pretrained: bool = False, img_size: int | None = None, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with a suggestion for unknown names, and ``img_size`` for fixed-input-size models.

    ``img_size`` is passed to the model only when its input size is fixed (ViT-style position embeddings); other
    models take any size and their constructors do not accept the argument.
    """
    import timm

    import_plugins()
    if not name.startswith(HUB_PREFIXES):
        check_model_name(name)
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:
        if 'Unknown model' in str(e):  # the architecture named in a Hub/local config.json
            arch = str(e).split('(')[-1].rstrip(')')
            check_model_name(arch)
        raise
    input_size = model.pretrained_cfg.get('input_size', (3, 0, 0))
    if img_size and model.pretrained_cfg.get('fixed_input_size') and tuple(input_size[1:]) != (img_size, img_size):
        model = timm.create_model(name, pretrained=pretrained, img_size=img_size, **kwargs)
    return model


def load_model(source: str, **kwargs: Any) -> torch.nn.Module:
    """A model with weights: a folder in ``save_for_hf`` layout, ``hf-hub:``/``local-dir:`` ids, or ``arch.tag``."""
    if os.path.isdir(source):
        source = f'local-dir:{os.path.abspath(source)}'
    return create_model(source, pretrained=True, **kwargs)


def model_name(model: torch.nn.Module) -> str:
    """The registry name of a timm model (what ``config.json["architecture"]`` records)."""
    return model.pretrained_cfg.get('architecture') or type(model).__name__.lower()


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
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    tops, targets, losses = [], [], []
    bar = tqdm(total=len(loader), desc='eval', unit='batch', leave=False, disable=not accelerator.is_main_process)
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
    from sklearn.metrics import confusion_matrix

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
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

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

    Returns:
        ``top1``, ``top5`` (percent), ``loss``, ``num_samples``, ``per_class`` (class name -> percent),
        ``confusion_matrix``, ``label_names``, ``dataset``, ``split``, ``model``.
    """
    from timm.data import create_transform

    accelerator = _fresh_accelerator(cpu=cpu or _cpu_only_multiprocess(), mixed_precision=mixed_precision)
    # the data first: a mistyped path fails before any weights are loaded
    part, dataset_names, name = load_eval_split(
        dataset,
        split,
        config=dataset_config,
        image_column=image_column,
        label_column=label_column,
        max_samples=max_samples,
        embedded_cache=embedded_cache,
    )
    model = load_model(model_or_path) if isinstance(model_or_path, str) else model_or_path
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
    if output_dir is not None and accelerator.is_main_process:
        from hybrid_zoo.train.plotting import plot_confusion_matrix

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'eval_results.json').write_text(json.dumps(results, indent=2))
        title = f'{results["model"]} on {name}/{split}: top-1 {results["top1"]:.2f}%'
        plot_confusion_matrix(metrics['confusion_matrix'], label_names, out / 'confusion_matrix.png', title)
        logger.info('wrote %s and %s', out / 'eval_results.json', out / 'confusion_matrix.png')
    accelerator.wait_for_everyone()
    return results


def _cpu_only_multiprocess() -> bool:
    # accelerate picks the gloo CPU backend only with cpu=True; without it, `accelerate launch --multi_gpu` on a
    # machine with no GPU silently runs independent single-process jobs
    return not torch.cuda.is_available() and int(os.environ.get('WORLD_SIZE', '1')) > 1


# ----------------------------------------------------------------------------------------------------------------------
# Command line: hybrid-zoo eval (the parser lives in hybrid_zoo_cli.evaluate, which starts without torch)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rank0 = int(os.environ.get('RANK', '0')) == 0
    logging.basicConfig(
        level=logging.INFO if rank0 else logging.WARNING, format='%(asctime)s %(levelname)s %(name)s: %(message)s'
    )
    try:
        results = evaluate(
            args.model,
            args.dataset,
            args.split,
            dataset_config=args.dataset_config,
            image_column=args.image_column,
            label_column=args.label_column,
            batch_size=args.batch_size,
            workers=args.workers,
            max_samples=args.max_samples,
            img_size=args.img_size,
            output_dir=args.output_dir,
            mixed_precision=args.mixed_precision,
            cpu=args.cpu,
            embedded_cache=args.embedded_cache,
        )
    except (DataError, UnknownModelError) as e:
        logger.error('%s', e)
        return 2
    if rank0:
        width = max(map(len, results['per_class']), default=0)
        for cls, acc in results['per_class'].items():
            logger.info('  %-*s %s', width, cls, 'n/a' if acc is None else f'{acc:6.2f}%')
        summary = {k: results[k] for k in ('model', 'dataset', 'split', 'num_samples', 'top1', 'top5', 'loss')}
        print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
