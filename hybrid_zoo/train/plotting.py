"""Training-curve and confusion-matrix figures (PNG), drawn without a display (no pyplot state is kept) and written
atomically (a reader never sees half a PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

from hybrid_zoo.atomic import write_figure_atomic


def _figure(width: float, height: float):

    # a bare Figure renders through the Agg canvas: no GUI backend, no global pyplot figure to leak
    return Figure(figsize=(width, height), layout='constrained')


def plot_training_curves(history: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> Path:
    """Loss and accuracy per epoch, as written to ``metrics.jsonl``.

    Args:
        history: One dict per epoch with ``epoch``, ``train_loss``, ``val_loss``, ``val_top1``, ``val_top5`` and,
            when EMA is on, ``ema_val_loss`` / ``ema_val_top1``.
        path: PNG to write.
        title: Figure title.

    Returns:
        ``path``.
    """

    fig = _figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h['epoch'] for h in history]
    marker = 'o' if len(epochs) <= 30 else None
    for ax, keys, ylabel in (
        (ax_loss, ('train_loss', 'val_loss', 'ema_val_loss'), 'loss'),
        (ax_acc, ('val_top1', 'val_top5', 'ema_val_top1'), 'accuracy (%)'),
    ):
        for key in keys:
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], marker=marker, label=key)
        ax.set_xlabel('epoch')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    if history and history[-1].get('val_top1') is not None:
        ax_acc.set_title(f'final val top-1 {history[-1]["val_top1"]:.2f}%')
    if title:
        fig.suptitle(title)
    write_figure_atomic(fig, path, dpi=120)
    return Path(path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]] | np.ndarray,
    label_names: Sequence[str],
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted), coloured by row-normalised rate.

    Counts are written in the cells for up to 20 classes; above that the cells are too small to read.

    Args:
        matrix: ``(num_classes, num_classes)`` counts.
        label_names: Class names, in label order.
        path: PNG to write.
        title: Figure title.

    Returns:
        ``path``.
    """

    counts = np.asarray(matrix)
    n = len(label_names)
    # colour by recall per true class so rare classes are as visible as common ones; counts stay in the cells
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(3 + 0.4 * n, 24)
    fig = _figure(size + 1, size)
    ax = fig.subplots()
    display = ConfusionMatrixDisplay(rates, display_labels=list(label_names))
    display.plot(
        ax=ax,
        include_values=False,
        cmap='Blues',
        xticks_rotation='vertical',
        colorbar=True,
        im_kw={'vmin': 0, 'vmax': 1},
    )
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    color = 'white' if rates[i, j] > 0.5 else 'black'
                    ax.text(j, i, str(int(counts[i, j])), ha='center', va='center', color=color, fontsize=8)
    ax.set_title(title or 'confusion matrix (colour: share of the true class)')
    write_figure_atomic(fig, path, dpi=120)
    return Path(path)
