"""The GPU Fashion-MNIST protocol: every model trained the same way on the full training set in minutes.

On a GPU the per-image PIL pipeline of ``hybrid-zoo train`` would starve the device, so this protocol keeps the
whole dataset on the GPU as ``uint8`` (47 MB) and augments whole batches there. The recipe is the CPU
protocol's (``compare.RECIPES['cpu64']``: 64 px grayscale, AdamW, cosine with warmup, label smoothing 0.1,
drop path 0.05, random-resized-crop at scale 0.6-1 plus horizontal flip) with three changes the budget asks
for: all 60,000 training images, a larger batch with the learning rate scaled by its square root, and bf16
autocast. There is no validation split and no checkpoint selection: the final weights are tested once on
the 10,000 official test images. Every model gets the same epochs, batch, schedule and seed.

Per batch, on the device: bilinear resize 28 -> ``img_size`` folded into one ``affine_grid``/``grid_sample``
with a per-image random crop (area ``scale``, aspect 3/4-4/3) and flip; then ``(x - mean) / std`` with each
model's mean/std as the trainer takes them (``data.model_data_config``). Test images are resized without crop
or flip.

The run keeps to a time budget: before each model it estimates (from the models already trained, scaled by
GMACs) whether that model fits, and skips it if not, saying so. Results are rewritten after every model in the
format of ``hybrid-zoo compare`` (``fmnist-gpu64.json`` + ``.md`` + ``.png``), with the GPU's name in ``meta``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.compare import RECIPES, Recipe, per_model, ranking_stable, render, summarize
from hybrid_zoo.benchmarks.peers import PEER_SETS
from hybrid_zoo.benchmarks.results import RESULTS_DIR, machine_meta
from hybrid_zoo.flops import count_params
from hybrid_zoo.labels import FASHION_MNIST_CLASSES
from hybrid_zoo.logs import progress as progress_bar
from hybrid_zoo.logs import setup_logging
from hybrid_zoo.models import MODEL_NAMES
from hybrid_zoo.train.data import DataError, fashion_mnist_available, model_data_config, read_idx
from hybrid_zoo.train.evaluate import Predictions, classification_metrics

_log = logging.getLogger(__name__)


def gpu_recipe(epochs: int = 4, batch_size: int = 512, img_size: int = 64) -> Recipe:
    """The CPU recipe on all the data, with the batch scaled and its learning rate by the square root."""
    base = RECIPES['cpu64']
    lr = base.lr * math.sqrt(batch_size / base.batch_size)
    return dataclasses.replace(
        base,
        name='gpu64',
        img_size=img_size,
        train_samples=None,
        val_fraction=0.0,
        val_samples=0,
        epochs=epochs,
        batch_size=batch_size,
        lr=round(lr, 6),
    )


def default_models() -> list[str]:
    """The nine ConvFormer variants, then the tiny and small peer sets of the benchmark."""

    return [*MODEL_NAMES, *PEER_SETS['tiny'], *PEER_SETS['small']]


def load_arrays(source_dir: str | os.PathLike, train_samples: int | None, test_samples: int | None, seed: int = 0):
    """Fashion-MNIST as uint8 arrays from the four IDX files; optional seeded subsets (for smoke runs)."""

    source = Path(source_dir)
    if not fashion_mnist_available(source):
        raise DataError(
            f'Fashion-MNIST IDX files not found in {source}: copy the four *-ubyte.gz files of the Debian package '
            "'dataset-fashion-mnist' (/usr/share/datasets/fashion-mnist) there, or pass --data-dir"
        )
    out = {}
    rng = np.random.default_rng(seed)
    for split, prefix, n in (('train', 'train', train_samples), ('test', 't10k', test_samples)):
        x = read_idx(source / f'{prefix}-images-idx3-ubyte.gz')
        y = read_idx(source / f'{prefix}-labels-idx1-ubyte.gz').astype(np.int64)
        if n:
            idx = np.sort(rng.permutation(len(x))[:n])
            x, y = x[idx], y[idx]
        out[split] = (torch.from_numpy(x.copy()), torch.from_numpy(y))
    return out


def augment(x: torch.Tensor, size: int, scale: tuple[float, float], generator: torch.Generator | None) -> torch.Tensor:
    """Random resized crop (area ``scale``, aspect 3/4-4/3) + horizontal flip + resize, batched on ``x.device``.

    ``x`` is ``(B, 1, H, W)`` float in [0, 1]; one ``affine_grid`` maps each output pixel into its crop window.
    """
    b, dev = x.shape[0], x.device

    def rand(*shape):
        return torch.rand(*shape, device=dev, generator=generator)

    area = scale[0] + (scale[1] - scale[0]) * rand(b)
    log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b)
    ratio = torch.exp(log_ratio)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop size as a fraction of the image side
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (1 - w) * (2 * rand(b) - 1)  # crop centre in [-1, 1] coordinates, keeping the crop inside
    cy = (1 - h) * (2 * rand(b) - 1)
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta, (b, 1, size, size), align_corners=False)
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='border', align_corners=False)


def to_input(x_uint8: torch.Tensor, size: int, mean: float, std: float) -> torch.Tensor:
    """``(B, H, W)`` uint8 -> normalised channels_last ``(B, 1, size, size)`` float, resized (test-time path)."""
    x = x_uint8.unsqueeze(1).float().div_(255)
    x = F.interpolate(x, size=(size, size), mode='bilinear', align_corners=False, antialias=False)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def train_one(
    name: str,
    data: dict,
    recipe: Recipe,
    device: torch.device,
    gmacs: float,
    seed: int = 0,
    amp: bool = True,
    progress: bool = True,
) -> dict:
    """Train ``name`` under ``recipe`` on ``data`` (tensors on ``device``), test it; return a compare row.

    ``gmacs``: the model's count at the recipe size (:func:`model_gmacs`), recorded in the row.
    """

    torch.manual_seed(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    model = recipe.create_model(name, drop_path_rate=recipe.drop_path_rate)
    params_m = count_params(model) / 1e6
    data_cfg = model_data_config(model, recipe.img_size, recipe.in_chans)  # the trainer's normalisation
    mean, std = data_cfg['mean'][0], data_cfg['std'][0]
    model = model.to(device, memory_format=torch.channels_last).train()
    x_train, y_train = data['train']
    steps_per_epoch = len(x_train) // recipe.batch_size  # drop the last partial batch: equal steps for everyone
    if steps_per_epoch < 1:
        raise ValueError(f'batch size {recipe.batch_size} is larger than the {len(x_train)} training images')
    opt = create_optimizer_v2(model, 'adamw', lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched, _ = create_scheduler_v2(
        opt,
        'cosine',
        num_epochs=recipe.epochs,
        warmup_epochs=recipe.warmup_epochs,
        warmup_lr=recipe.lr * 1e-3,
        min_lr=recipe.lr * 1e-3,
        step_on_epochs=False,
        updates_per_epoch=steps_per_epoch,
    )
    loss_fn = LabelSmoothingCrossEntropy(recipe.smoothing)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    total = steps_per_epoch * recipe.epochs
    bar = progress_bar(total=total * recipe.batch_size, desc=name, unit='img', unit_scale=True, enabled=progress)
    _sync(device)
    start, updates = time.perf_counter(), 0
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(x_train), device=device, generator=gen)
        for step in range(steps_per_epoch):
            idx = order[step * recipe.batch_size : (step + 1) * recipe.batch_size]
            x = x_train[idx].unsqueeze(1).float().div_(255)
            x = (augment(x, recipe.img_size, recipe.scale, gen) - mean) / std
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = loss_fn(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            updates += 1
            sched.step_update(updates)
            bar.update(recipe.batch_size)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f'{name}: loss became {loss_value} in epoch {epoch + 1}')
        bar.set_postfix(epoch=epoch + 1, loss=f'{loss_value:.3f}')
    _sync(device)
    train_time = time.perf_counter() - start
    bar.close()
    top1, top5, per_class = test(model, data['test'], recipe.img_size, recipe.batch_size, autocast, mean, std)
    return {
        'model': name,
        'seed': seed,
        'recipe': recipe.name,
        'model_kwargs': {},
        'test_top1': round(top1, 3),
        'test_top5': round(top5, 3),
        'val_top1': None,
        'weights': 'final',
        'train_time_s': round(train_time, 2),
        'train_img_per_s': round(total * recipe.batch_size / train_time, 1),
        'params_m': round(params_m, 3),
        'gmacs': round(gmacs, 4),
        'per_class_test': per_class,
        'model_dir': None,
    }


@torch.no_grad()
def test(model, test_data, size: int, batch_size: int, autocast, mean: float, std: float) -> tuple[float, float, dict]:
    """Top-1, top-5 and per-class accuracy (percent) on every test image, no augmentation (the trainer's metrics)."""

    model.eval()
    x_test, y_test = test_data
    topk, losses = [], []
    for i in range(0, len(x_test), batch_size):
        with autocast:
            logits = model(to_input(x_test[i : i + batch_size], size, mean, std)).float()
        topk.append(logits.topk(5, dim=1).indices)
        losses.append(F.cross_entropy(logits, y_test[i : i + batch_size], reduction='none'))
    pred = Predictions(torch.cat(topk).cpu(), y_test.cpu(), torch.cat(losses).cpu())
    metrics = classification_metrics(pred, list(FASHION_MNIST_CLASSES))
    per_class = {label: acc for label, acc in metrics['per_class'].items() if acc is not None}
    return metrics['top1'], metrics['top5'], per_class


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def run(
    models: Sequence[str],
    recipe: Recipe,
    data_dir: str | os.PathLike,
    results: str | os.PathLike,
    device: str = 'cuda',
    time_budget: float = 280.0,
    train_samples: int | None = None,
    test_samples: int | None = None,
    amp: bool = True,
) -> dict:
    """Train and test ``models`` one after the other within ``time_budget`` seconds; write the results file."""
    started = time.perf_counter()
    dev = torch.device(device)
    if dev.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    arrays = load_arrays(data_dir, train_samples, test_samples)
    data = {k: (x.to(dev), y.to(dev)) for k, (x, y) in arrays.items()}
    if train_samples:
        recipe = dataclasses.replace(recipe, train_samples=len(arrays['train'][0]))
    meta = machine_meta()
    if dev.type == 'cuda':
        meta['device'] = torch.cuda.get_device_name(dev)
    meta['amp'] = 'bf16' if amp else 'fp32'
    rows: list[dict] = []
    skipped: list[dict] = []
    sec_per_gmac: list[float] = []
    out: dict = {}
    for name in models:
        elapsed = time.perf_counter() - started
        gmacs = model_gmacs(name, recipe)
        estimate = max(sec_per_gmac) * gmacs if sec_per_gmac else None  # the worst time per GMAC seen so far
        if estimate is not None and elapsed + estimate > time_budget:
            _log.warning(
                'skipping %s: about %.0f s needed, %.0f s of the budget left', name, estimate, time_budget - elapsed
            )
            skipped.append(
                {'model': name, 'reason': f'time budget ({estimate:.0f} s needed, {time_budget - elapsed:.0f} s left)'}
            )
            continue
        row = train_one(name, data, recipe, dev, gmacs, amp=amp)
        rows.append(row)
        sec_per_gmac.append(row['train_time_s'] / max(row['gmacs'], 1e-6))
        _log.info(
            '%s: test top-1 %.2f (%.1f s, %.0f img/s)',
            name,
            row['test_top1'],
            row['train_time_s'],
            row['train_img_per_s'],
        )
        out = {
            'meta': meta,
            'recipe': dataclasses.asdict(recipe),
            'variant': None,
            'model_kwargs': {},
            'dataset': 'Fashion-MNIST (Debian dataset-fashion-mnist), test split = the 10,000 official test images',
            'runs': rows,
            'skipped': skipped,
            'summary': summarize(rows),
            'ranking_stable_across_seeds': ranking_stable(rows),
            'ranking_swaps': [],  # one seed
            'models': per_model(rows),
            'elapsed_s': round(time.perf_counter() - started, 1),
        }
        write_json_atomic(results, out)
    if not rows:
        raise RuntimeError(f'no model fitted the {time_budget:.0f} s budget')
    out['skipped'] = skipped
    write_json_atomic(results, out)
    render(out, Path(results), bench_file='bench-gpu.json' if dev.type == 'cuda' else 'bench-cpu.json')
    return out


def model_gmacs(name: str, recipe: Recipe) -> float:
    """GMACs of ``name`` as built for ``recipe`` (counted once per model, on the CPU)."""

    return recipe.gmacs(recipe.create_model(name).eval())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='tools/gpu_fmnist.py',
        description='Fashion-MNIST on a GPU: the nine ConvFormer models and the tiny and small peers, one identical '
        'recipe, full training set, bf16, within a time budget; writes fmnist-gpu64.{json,md,png}.',
    )
    p.add_argument('--models', nargs='+', default=None, help='timm model names (default: ours + tiny + small peers)')
    p.add_argument('--epochs', type=int, default=4, help='epochs for every model (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=512, help='batch size (default: %(default)s)')
    p.add_argument('--img-size', type=int, default=64, help='resolution (default: %(default)s)')
    p.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu' for a smoke run")
    p.add_argument('--no-amp', action='store_true', help='fp32 instead of bf16 autocast')
    p.add_argument('--time-budget', type=float, default=280.0, help='seconds for the whole run (default: %(default)s)')
    p.add_argument(
        '--data-dir', default='/usr/share/datasets/fashion-mnist', help='folder with the four Fashion-MNIST IDX files'
    )
    p.add_argument('--train-samples', type=int, default=None, help='seeded training subset (smoke runs only)')
    p.add_argument('--test-samples', type=int, default=None, help='seeded test subset (smoke runs only)')
    p.add_argument(
        '--out-dir', default=None, help='where to write fmnist-gpu64.* (default: $OUT or model_cards/results)'
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(fmt='%(message)s')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('no CUDA device: this protocol is for a GPU (use --device cpu for a smoke run)')
    recipe = gpu_recipe(args.epochs, args.batch_size, args.img_size)
    out_dir = Path(args.out_dir or os.environ.get('OUT') or RESULTS_DIR)
    results = out_dir / f'fmnist-{recipe.name}.json'
    data = run(
        args.models or default_models(),
        recipe,
        args.data_dir,
        results,
        device=args.device,
        time_budget=args.time_budget,
        train_samples=args.train_samples,
        test_samples=args.test_samples,
        amp=not args.no_amp,
    )
    for name, s in data['summary'].items():
        print(f'{name:28s} test top-1 {s["mean"]:.2f}')
    for s in data['skipped']:
        print(f'{s["model"]:28s} skipped: {s["reason"]}')
    print(f'wrote {results} in {data["elapsed_s"]:.0f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
