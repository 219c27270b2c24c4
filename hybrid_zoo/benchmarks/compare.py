"""``hybrid-zoo compare``: train several timm models under one identical recipe and test each one.

Every model sees the same data (a fixed seeded subset of the training split, a validation share carved
from it), resolution, augmentation, optimizer, schedule, epochs, batch size and seeds, through the
project's own training code; each is then evaluated once on the untouched test split. Results go to one
JSON file (plus a markdown table and a plot) and runs already finished are skipped, so an interrupted
comparison resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from datasets import DatasetDict, load_from_disk
from safetensors import safe_open

from hybrid_zoo.atomic import read_json, write_atomic, write_figure_atomic, write_json_atomic
from hybrid_zoo.benchmarks.peers import fitted_kwargs, takes_drop_path
from hybrid_zoo.benchmarks.results import RESULTS_DIR, current_rows, machine_meta
from hybrid_zoo.benchmarks.tables import markdown_table
from hybrid_zoo.factory import sha256_file
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo.hub.client import push
from hybrid_zoo.labels import FASHION_MNIST_CLASSES
from hybrid_zoo.logs import progress
from hybrid_zoo.models.pretrained import FMNIST_MODELS, FMNIST_TAG, HUB_ORG
from hybrid_zoo.models.variants import ARCH_VERSION, VARIANTS, measured_on_current
from hybrid_zoo.run_files import METRICS, MODEL_DIR, WEIGHTS_NAME
from hybrid_zoo.train.evaluate import create_model, evaluate
from hybrid_zoo.train.loop import TrainConfig, fit

_log = logging.getLogger(__name__)

# test accuracy (%) from the benchmark table of https://github.com/zalandoresearch/fashion-mnist
PUBLISHED = {'ResNet18': 94.9, 'MobileNet': 95.0, 'DenseNet-BC': 95.4, 'WRN-40-4': 96.7}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One training recipe, applied identically to every model."""

    name: str = 'cpu64'
    img_size: int = 64
    in_chans: int = 1  # Fashion-MNIST is grayscale: every model gets a 1-channel stem
    train_samples: int | None = 5000  # fixed seeded subset of the train split (None = all 60,000)
    val_fraction: float = 0.1  # held out of the train split for checkpoint selection; test stays untouched
    val_samples: int | None = 1000  # seeded subset of that held-out part, evaluated every epoch
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    drop_path_rate: float = 0.05
    smoothing: float = 0.1
    scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop area range: mild at this resolution
    aa: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    ema: bool = False
    data_seed: int = 0  # the balanced pool below is the same for every model and seed
    # a class-balanced pool of train_samples / (1 - val_fraction) images drawn once with data_seed: the stratified
    # validation carve of each run then leaves a balanced training set of at least train_samples images; without it
    # the subset is a random one drawn with the run's seed (paired across models, not balanced)
    balanced: bool = False
    # peers whose attention windows are sized for 224 px get windows fitted to this recipe's maps (peers.fitted_kwargs)
    fit_peer_windows: bool = False
    # a continuation: the finished run of this recipe, same model and seed, supplies the starting weights (its exported
    # ones: the EMA where it kept one); this recipe is then a second schedule on top of it (a warm restart), with the
    # same data, subset and validation share, so the held-out curve goes on where that run's stopped
    continues: str | None = None

    def create_model(self, name: str, **kwargs) -> torch.nn.Module:
        """``name`` built for this recipe: ``in_chans`` channels at ``img_size`` px (fixed-size peers such as CoAtNet
        get their grids for it), one output per Fashion-MNIST class."""
        return create_model(
            name, img_size=self.img_size, num_classes=len(FASHION_MNIST_CLASSES), in_chans=self.in_chans, **kwargs
        )

    def gmacs(self, model: torch.nn.Module) -> float:
        """GMACs per image of ``model`` at this recipe's input size (attention counted)."""
        return count_macs(model, (self.in_chans, self.img_size, self.img_size)).gmacs


RECIPES: dict[str, Recipe] = {
    'cpu64': Recipe(),
    # the architecture yardstick of v2: attention at stride 16 sees a 6x6 map (4x4 at 64 px), stride 8 12x12
    'yard96': Recipe(name='yard96', img_size=96, train_samples=6000, epochs=5),
    # the front yardstick: the efficient peers and ours on one plane; 96 px so attention at stride 16 sees a 6x6 map,
    # a class-balanced 6,000-image training set, 3 paired seeds (the seed also carves the held-out share)
    'front96': Recipe(
        name='front96',
        img_size=96,
        train_samples=6000,
        val_samples=None,
        epochs=5,
        balanced=True,
        fit_peer_windows=True,
    ),
    'smoke': Recipe(name='smoke', img_size=32, train_samples=400, epochs=1, batch_size=32),
    'long64': Recipe(
        name='long64',
        train_samples=None,
        val_samples=2000,
        epochs=12,
        lr=2e-3,
        aa='rand-m6-mstd0.5',
        mixup=0.2,
        cutmix=0.0,
        ema=True,
    ),
}
# long64's held-out curve still rose over its last epochs: four more epochs from its weights, with a fresh
# cosine from a quarter of its peak learning rate
RECIPES['long64x'] = dataclasses.replace(
    RECIPES['long64'], name='long64x', continues='long64', epochs=4, lr=5e-4, warmup_epochs=0.25
)


def _train_only(dataset_dir: Path, work: Path, recipe: Recipe) -> Path:
    """The train split alone, saved once, so the trainer carves validation from it and never sees test; for a
    ``balanced`` recipe, its class-balanced pool (``Recipe.balanced``)."""

    out = work / ('train_pool' if recipe.balanced else 'train_only')
    if not (out / 'dataset_dict.json').exists():
        train = load_from_disk(str(dataset_dir))['train']
        if recipe.balanced:
            train = train.select(balanced_pool(train['label'], recipe))
        DatasetDict({'train': train}).save_to_disk(str(out))
    return out


def balanced_pool(labels: Sequence[int], recipe: Recipe) -> list[int]:
    """Row numbers of an equal number of images per class, enough that ``recipe.train_samples`` remain after the
    ``val_fraction`` carve; drawn with ``recipe.data_seed``, sorted.

    Raises:
        ValueError: a class has fewer images than its share.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = math.ceil(recipe.train_samples / (1.0 - recipe.val_fraction) / len(classes))
    rng = np.random.default_rng(recipe.data_seed)
    rows = []
    for c in classes:
        mine = np.flatnonzero(labels == c)
        if len(mine) < per_class:
            raise ValueError(f'recipe {recipe.name!r}: class {c} has {len(mine)} images, expected >= {per_class}')
        rows.append(rng.choice(mine, size=per_class, replace=False))
    return sorted(int(i) for i in np.concatenate(rows))


def train_config(
    model: str,
    *,
    seed: int,
    recipe: Recipe,
    dataset: Path,
    out: Path,
    workers: int = 2,
    model_kwargs: dict | None = None,
    pretrained: str | None = None,
) -> TrainConfig:
    """The training options of one run of ``recipe``: the same for every model, except what a model cannot take
    (a peer's attention windows fitted to the maps; no stochastic depth for a model without it)."""
    if recipe.fit_peer_windows and model not in VARIANTS:
        model_kwargs = {**fitted_kwargs(model, recipe.img_size), **(model_kwargs or {})}
    # the recipe's stochastic depth, for the models that have it (timm passes the argument through; RepViT has none)
    drop_path_rate = recipe.drop_path_rate if model in VARIANTS or takes_drop_path(model) else None
    return TrainConfig(
        model=model,
        in_chans=recipe.in_chans,
        img_size=recipe.img_size,
        model_kwargs=dict(model_kwargs or {}),
        dataset=str(dataset),
        val_fraction=recipe.val_fraction,
        max_train_samples=None if recipe.balanced else recipe.train_samples,
        max_val_samples=recipe.val_samples,
        epochs=recipe.epochs,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        warmup_epochs=recipe.warmup_epochs,
        drop_path_rate=drop_path_rate,
        smoothing=recipe.smoothing,
        scale=recipe.scale,
        color_jitter=0.0,
        aa=recipe.aa,
        mixup=recipe.mixup,
        cutmix=recipe.cutmix,
        ema=recipe.ema,
        channels_last=True,
        seed=seed,
        workers=workers,
        output_dir=str(out),
        resume='auto',
        cpu=True,
        pretrained=pretrained,
    )


def run_one(
    model: str,
    seed: int,
    recipe: Recipe,
    dataset_dir: Path,
    work: Path,
    workers: int = 2,
    model_kwargs: dict | None = None,
    parent_work: Path | None = None,
) -> dict:
    """Train ``model`` with ``seed`` under ``recipe`` (resuming a cut run), test it, return its row.

    ``model_kwargs`` change the architecture (a design variant under test), never the recipe. A continuation recipe
    (``recipe.continues``) starts from the weights of the same model and seed's finished run under ``parent_work``.
    """

    out = work / f'{model}-s{seed}'
    row_file = out / 'compare_row.json'
    if row_file.exists():
        return json.loads(row_file.read_text())
    parent = _parent_run(model, seed, recipe, parent_work) if recipe.continues else None
    cfg = train_config(
        model,
        seed=seed,
        recipe=recipe,
        dataset=_train_only(dataset_dir, work, recipe),
        out=out,
        workers=workers,
        model_kwargs=model_kwargs,
        pretrained=parent['model_dir'] if parent else None,
    )
    model_kwargs, drop_path_rate = cfg.model_kwargs, cfg.drop_path_rate
    final = fit(cfg)
    test = evaluate(
        str(out / MODEL_DIR),
        str(dataset_dir),
        split='test',
        img_size=recipe.img_size,
        output_dir=out / 'test',
        cpu=True,
    )
    net = recipe.create_model(model, **(model_kwargs or {}))
    row = {
        'model': model,
        'seed': seed,
        'recipe': recipe.name,
        'model_kwargs': dict(model_kwargs or {}),
        'architecture_version': ARCH_VERSION if model in VARIANTS else None,
        'drop_path_rate': drop_path_rate,  # None: the model has no stochastic depth
        'test_top1': round(test['top1'], 3),
        'test_top5': round(test['top5'], 3),
        'val_top1': round(final['top1'], 3),
        'weights': final.get('weights'),
        'train_time_s': final.get('train_time_s'),
        'train_img_per_s': final.get('images_per_s'),
        'params_m': round(count_params(net) / 1e6, 3),
        'gmacs': round(recipe.gmacs(net), 4),
        'per_class_test': test.get('per_class'),
        'model_dir': str(out / MODEL_DIR),
    }
    if parent:  # what it started from: the curve plot and the docs put the two schedules end to end
        row['continues'] = {
            'recipe': recipe.continues,
            'epochs': parent['epochs'],
            'val_curve': (parent.get('diagnostics') or {}).get('val_curve'),
            'val_top1': parent['val_top1'],
            'test_top1': parent['test_top1'],
            'train_time_s': parent.get('train_time_s'),
        }
    write_json_atomic(row_file, row)  # its presence marks the run finished: never half-written
    return row


def _parent_run(model: str, seed: int, recipe: Recipe, parent_work: Path | None) -> dict:
    """The finished run a continuation recipe starts from: its compare row, with its recipe's epoch count.

    Raises:
        FileNotFoundError: that run is not finished (or kept no weights) under ``parent_work``.
        ValueError: it was trained on an architecture that has changed since.
    """
    run = (parent_work or Path('.')) / f'{model}-s{seed}'
    row_file, weights = run / 'compare_row.json', run / MODEL_DIR / WEIGHTS_NAME
    if not (row_file.exists() and weights.exists()):
        raise FileNotFoundError(
            f'recipe {recipe.name!r} continues {recipe.continues!r}: expected the finished {recipe.continues} run of '
            f'{model} seed {seed} (compare_row.json and {MODEL_DIR}/{WEIGHTS_NAME}) in {run}; run '
            f'`hybrid-zoo compare --recipe {recipe.continues} --models {model} --seeds {seed}` first'
        )
    row = json.loads(row_file.read_text())
    if not measured_on_current(model, row):
        raise ValueError(
            f'{run} holds {model} architecture v{row.get("architecture_version") or 1}, expected v{ARCH_VERSION} (the '
            f'current one): rerun `hybrid-zoo compare --recipe {recipe.continues} --models {model} --seeds {seed}`'
        )
    row['diagnostics'] = row.get('diagnostics') or diagnostics(run)
    curve = (row['diagnostics'] or {}).get('val_curve') or []  # one entry per epoch it trained
    return {**row, 'epochs': len(curve) or RECIPES[recipe.continues].epochs, 'model_dir': str(run / MODEL_DIR)}


def summarize(rows: Sequence[dict]) -> dict:
    """Per model: mean, sample standard deviation, min and max test top-1 over seeds."""
    by_model: dict[str, list[float]] = {}
    for r in rows:
        by_model.setdefault(r['model'], []).append(r['test_top1'])
    return {
        m: {
            'n': len(v),
            'mean': round(statistics.fmean(v), 3),
            'std': round(statistics.stdev(v), 3) if len(v) > 1 else 0.0,
            'min': min(v),
            'max': max(v),
        }
        for m, v in by_model.items()
    }


def ranking_stable(rows: Sequence[dict]) -> bool:
    """True when every seed ranks the models in the same order as the mean does."""
    seeds = sorted({r['seed'] for r in rows})
    mean_order = [m for m, _ in sorted(summarize(rows).items(), key=lambda kv: -kv[1]['mean'])]
    for seed in seeds:
        acc = {r['model']: r['test_top1'] for r in rows if r['seed'] == seed}
        order = [m for m in sorted(acc, key=lambda m: -acc[m])]
        if order != [m for m in mean_order if m in acc]:
            return False
    return True


def swapped_pairs(rows: Sequence[dict]) -> list[dict]:
    """Pairs of models whose order differs between seeds, with the gap between their means (points)."""
    means = {m: s['mean'] for m, s in summarize(rows).items()}
    by_seed: dict[int, dict[str, float]] = {}
    for r in rows:
        by_seed.setdefault(r['seed'], {})[r['model']] = r['test_top1']
    out = []
    names = sorted(means, key=lambda m: -means[m])
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            signs = {(acc[a] > acc[b]) - (acc[a] < acc[b]) for acc in by_seed.values() if a in acc and b in acc}
            if len(signs) > 1:
                out.append({'models': [a, b], 'mean_gap': round(means[a] - means[b], 3)})
    return out


def compare(
    models: Sequence[str],
    seeds: Sequence[int],
    recipe: Recipe,
    dataset_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    results: str | os.PathLike,
    workers: int = 2,
    report_only: bool = False,
    model_kwargs: dict | None = None,
    variant: str | None = None,
    rerun: bool = False,
) -> dict:
    """Train and test every (model, seed) pair; write and return the results file contents.

    A pair already recorded in ``results`` (same recipe and design, an architecture that has not changed since) is
    kept as recorded and not trained again, so a comparison committed in parts resumes in a fresh checkout; ``rerun``
    trains the given pairs again and replaces their rows. A run cut in the middle resumes from its checkpoint under
    ``work_dir``. With ``report_only`` nothing is trained: the finished runs are summarised (a cut comparison's
    results). ``model_kwargs`` build every model with a design change (``variant`` names it: its runs get their own
    folder, ``<recipe>-<variant>``), so a before/after pair shares the recipe and differs in the design only.

    Raises:
        ValueError: ``results`` holds another recipe or design (it is never overwritten by a different comparison).
    """

    if model_kwargs and not variant:
        raise ValueError(f'model_kwargs {model_kwargs} need a variant name, so their runs do not mix with the others')
    _check_same_comparison(results, recipe, variant, model_kwargs)
    work = Path(work_dir) / (f'{recipe.name}-{variant}' if variant else recipe.name)
    work.mkdir(parents=True, exist_ok=True)
    pairs = [(m, s) for s in seeds for m in models]  # seed-major: a cut comparison still covers every model
    if report_only:  # summarise the finished runs, train nothing
        done = [work / f'{m}-s{s}' / 'compare_row.json' for m, s in pairs]
        pairs = [(m, s) for (m, s), f in zip(pairs, done, strict=True) if f.exists()]
        if not pairs:
            raise FileNotFoundError(f'no finished runs under {work}')
    if rerun or report_only:
        rows = _other_runs(results, pairs, recipe, variant, model_kwargs)
    else:
        rows = _other_runs(results, [], recipe, variant, model_kwargs)
        recorded = {(r['model'], r['seed']) for r in rows}
        skipped = [p for p in pairs if p in recorded]
        if skipped:
            _log.info('%d run(s) already recorded in %s, kept as they are: %s', len(skipped), results, skipped)
        pairs = [p for p in pairs if p not in recorded]
    meta = machine_meta()
    if (report_only or not pairs) and Path(results).exists():  # the machine that trained, not the one summarising
        meta = read_json(results).get('meta', meta)
    parent_work = None
    if recipe.continues:
        parent_work = Path(work_dir) / (f'{recipe.continues}-{variant}' if variant else recipe.continues)
    data = _document(meta, recipe, variant, model_kwargs, rows)
    for model, seed in progress(pairs, desc=f'compare {recipe.name}', unit='run'):
        row = run_one(
            model,
            seed,
            recipe,
            Path(dataset_dir),
            work,
            workers=workers,
            model_kwargs=model_kwargs,
            parent_work=parent_work,
        )
        if row.get('model_dir'):
            row['diagnostics'] = diagnostics(Path(row['model_dir']).parent)
        rows.append(row)
        _log.info('%s seed %d: test top-1 %.2f', model, seed, rows[-1]['test_top1'])
        data = _document(meta, recipe, variant, model_kwargs, rows)
        write_json_atomic(results, data)
    if not rows:
        raise FileNotFoundError(f'nothing to summarise: no run of {list(models)} recorded in {results} or finished')
    render(data, Path(results))
    return data


def _document(meta: dict, recipe: Recipe, variant: str | None, model_kwargs: dict | None, rows: list[dict]) -> dict:
    return {
        'meta': meta,
        'recipe': dataclasses.asdict(recipe),
        'variant': variant,
        'model_kwargs': dict(model_kwargs or {}),
        'dataset': 'Fashion-MNIST (Debian dataset-fashion-mnist), test split = the 10,000 official test images',
        'runs': rows,
        'summary': summarize(rows),
        'ranking_stable_across_seeds': ranking_stable(rows),
        'ranking_swaps': swapped_pairs(rows),
        'models': per_model(rows),
    }


def _check_same_comparison(
    results: str | os.PathLike, recipe: Recipe, variant: str | None, model_kwargs: dict | None
) -> None:
    """Refuse to write into a results file of another recipe or design (a shortened recipe would replace the runs of
    the full one under the same name)."""
    if not Path(results).exists():
        return
    old = read_json(results)
    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)}
    theirs = {**defaults, **(old.get('recipe') or {})}
    ours = json.loads(json.dumps(dataclasses.asdict(recipe)))
    if (
        theirs != ours
        or old.get('variant') != variant
        or (old.get('model_kwargs') or {}) != json.loads(json.dumps(dict(model_kwargs or {})))
    ):
        changed = sorted(k for k in ours if theirs.get(k) != ours[k])
        raise ValueError(
            f'{results} holds another comparison (recipe {theirs.get("name")!r}, variant {old.get("variant")!r}; '
            f'differs in {changed or ["variant/model_kwargs"]}): expected the same recipe and design to add runs to '
            'it; name another results file'
        )


def diagnostics(run_dir: str | os.PathLike) -> dict | None:
    """What a finished run says about how well it fitted: final losses and the size of its layer scales.

    ``layer_scale``: mean |gamma| of the residual-branch scales (parameters named ``gamma``: ours, ConvNeXt),
    split into the blocks with attention (``ls1``/``ls2``) and the rest; None for models without any.
    """

    run = Path(run_dir)
    metrics, weights = run / METRICS, run / MODEL_DIR / WEIGHTS_NAME
    if not (metrics.exists() and weights.exists()):
        return None
    records = [json.loads(line) for line in metrics.read_text().strip().splitlines()]
    last = records[-1]
    sums: dict[str, list[float]] = {'attention': [], 'conv': []}
    with safe_open(str(weights), 'pt') as f:
        for key in f.keys():
            if key.endswith('gamma'):
                kind = 'attention' if ('.ls1.' in key or '.ls2.' in key) else 'conv'
                sums[kind].append(f.get_tensor(key).abs().mean().item())
    return {
        'train_loss': round(last['train_loss'], 4),
        'val_loss': round(last['val_loss'], 4),
        'layer_scale': {k: round(statistics.fmean(v), 4) for k, v in sums.items() if v} or None,
        # the held-out (val, carved from train) top-1 after each epoch, of the EMA weights where the run keeps them
        'val_curve': [r.get('ema_val_top1', r['val_top1']) for r in records],
    }


def per_model(rows: Sequence[dict]) -> dict:
    """Card-ready entries: mean test accuracies over seeds and the run facts shared by all seeds."""
    out = {}
    for model, s in summarize(rows).items():
        mine = [r for r in rows if r['model'] == model]
        out[model] = {
            'top1': s['mean'],
            'top1_std': s['std'],
            'top5': round(statistics.fmean(r['test_top5'] for r in mine), 3),
            'seeds': s['n'],
            'split': 'test',
            **(
                {'architecture_version': mine[0]['architecture_version']} if mine[0].get('architecture_version') else {}
            ),
            'params_m': mine[0]['params_m'],
            'gmacs': mine[0]['gmacs'],
            'train_img_per_s': round(statistics.fmean(r['train_img_per_s'] or 0 for r in mine), 1),
            'train_time_s': round(statistics.fmean(r['train_time_s'] or 0 for r in mine), 1),
        }
        classes = [r['per_class_test'] for r in mine if r.get('per_class_test')]
        if classes:
            out[model]['per_class'] = {c: round(statistics.fmean(pc[c] for pc in classes), 2) for c in classes[0]}
        diag = [r['diagnostics'] for r in mine if r.get('diagnostics')]
        if diag:
            scales = [d['layer_scale'] for d in diag if d['layer_scale']]
            out[model]['train_loss'] = round(statistics.fmean(d['train_loss'] for d in diag), 4)
            out[model]['val_loss'] = round(statistics.fmean(d['val_loss'] for d in diag), 4)
            out[model]['layer_scale'] = (
                {k: round(statistics.fmean(s[k] for s in scales), 4) for k in scales[0]} if scales else None
            )
    return out


def pick_advice(data: dict, bench: dict) -> str | None:
    """'Early, mid or late?' answered from this file's accuracies and the CPU bench speeds."""
    placements = {n: m for n, m in data['models'].items() if n.startswith('convformer_')}
    if len(placements) < 2:
        return None
    ranked = sorted(placements, key=lambda n: -placements[n]['top1'])
    best, runner_up = ranked[0], ranked[1]
    spread = max(placements[n]['top1_std'] for n in (best, runner_up))
    gap = placements[best]['top1'] - placements[runner_up]['top1']
    speed = {n: bench.get(n, {}).get('infer_img_s') for n in placements}
    fastest = max((n for n in speed if speed[n]), key=lambda n: speed[n], default=None)
    peers = {n: m for n, m in data['models'].items() if n not in placements}
    text = (
        f'**Early, mid or late?** Under this recipe `{best}` is the most accurate placement '
        f'({placements[best]["top1"]:.2f}%), {gap:.2f} points above the runner-up `{runner_up}`, against a seed '
        f'spread (std) of up to {spread:.2f} points'
    )
    text += ' (a real difference).' if gap > 2 * spread else ' (within about two seed spreads: treat as a tie).'
    if fastest:
        slowest = min((n for n in speed if speed[n]), key=lambda n: speed[n])
        text += (
            f' On the 2-core CPU `{fastest}` is the fastest ({speed[fastest]:.1f} img/s at 224 px vs '
            f'{speed[slowest]:.1f} for `{slowest}`).'
        )
    if peers:
        top_peer = max(peers, key=lambda n: peers[n]['top1'])
        diff = placements[best]['top1'] - peers[top_peer]['top1']
        verb = 'beats' if diff > 0 else 'trails'
        text += f' The best placement {verb} the best peer, `{top_peer}`, by {abs(diff):.2f} points.'
    return text


def _other_runs(
    results: str | os.PathLike,
    pairs: Sequence[tuple[str, int]],
    recipe: Recipe,
    variant: str | None,
    model_kwargs: dict | None,
) -> list[dict]:
    """The runs an existing results file of the same recipe and design holds besides the (model, seed) ``pairs`` about
    to be (re)run: a comparison that reruns some models or adds seeds keeps the rest. A run of an architecture that has
    changed since is dropped, so v1 and v2 runs of one model never mix in a summary."""
    if not Path(results).exists():
        return []
    old = read_json(results)
    ours = [dataclasses.asdict(recipe), variant, dict(model_kwargs or {})]
    # a recipe field added since the file was written reads as its default: the behaviour from before it existed
    defaults = {f.name: f.default for f in dataclasses.fields(Recipe)}
    theirs = [{**defaults, **old['recipe']} if old.get('recipe') else None, old.get('variant')]
    if [*theirs, old.get('model_kwargs') or {}] != json.loads(json.dumps(ours)):
        return []
    redone = set(pairs)
    return [
        r
        for r in old['runs']
        if (r['model'], r['seed']) not in redone and (variant or measured_on_current(r['model'], r))
    ]


def best_runs(results_files: Sequence[str | os.PathLike], models: Sequence[str], img_size: int) -> dict[str, dict]:
    """Each model's run with the best validation top-1 (carved from train: the test split never picks) over the given
    results files, among recipes at ``img_size`` without a variant.

    A design variant's runs (``--variant``) are left out: what is published must be what the registry builds; so are
    runs of an architecture that has changed since (``architecture_version``) and runs that kept no weights (the GPU
    protocol's).
    """
    best: dict[str, dict] = {}
    for f in results_files:
        data = read_json(f)
        if data.get('variant') or data['recipe']['img_size'] != img_size:
            continue
        for row in data['runs']:
            if row['model'] not in models or not row.get('model_dir'):
                continue
            if not measured_on_current(row['model'], row):
                continue
            if row['val_top1'] > best.get(row['model'], {}).get('val_top1', -1.0):
                best[row['model']] = dict(row, results_file=Path(f).name)
    return best


def publish(
    results_files: Sequence[str | os.PathLike],
    *,
    org: str | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    record: str | os.PathLike | None = RESULTS_DIR / 'pretrained.json',
    models: Sequence[str] = FMNIST_MODELS,
) -> dict[str, dict]:
    """Push the best run of each of ``models`` (ours) to ``<org>/<model>.fmnist_64``, the registered pretrained tags.

    Each push carries the weights, timm's config, the model card and the run's results; ``record`` (a JSON
    file, written only after every push succeeded) names which run each tag holds and the commit; the entries of
    tags not pushed this time stay in it.
    """

    best = best_runs(results_files, models, img_size=64)
    missing = [m for m in models if m not in best]
    if missing:
        raise FileNotFoundError(f'no finished 64 px run of {missing} in {[str(f) for f in results_files]}')
    out = {}
    for model, row in best.items():
        run_dir = Path(row['model_dir']).parent
        if not (run_dir / MODEL_DIR / WEIGHTS_NAME).exists():
            raise FileNotFoundError(
                f'{model}: the best run ({row["results_file"]}, seed {row["seed"]}) has no weights at {run_dir / MODEL_DIR}; '
                'rerun the comparison that produced it (it resumes) on this machine'
            )
        repo_id = f'{org or HUB_ORG}/{model}.{FMNIST_TAG}'
        info = push(
            run_dir,
            repo_id,
            endpoint=endpoint,
            token=token,
            commit_message=f'{model}: {row["recipe"]} seed {row["seed"]}, Fashion-MNIST test top-1 {row["test_top1"]:.2f}%',
        )
        out[f'{model}.{FMNIST_TAG}'] = {
            'repo_id': repo_id,
            'commit': info.oid,
            # the tag is pinned to this commit and these bytes (hybrid_zoo.models.pretrained.PUBLISHED)
            'sha256': sha256_file(run_dir / MODEL_DIR / WEIGHTS_NAME),
            'results_file': row['results_file'],
            'recipe': row['recipe'],
            'seed': row['seed'],
            'test_top1': row['test_top1'],
            'test_top5': row['test_top5'],
        }
        _log.info('published %s (test top-1 %.2f) as %s@%s', run_dir, row['test_top1'], repo_id, info.oid[:10])
    if record:
        kept = read_json(record).get('tags', {}) if Path(record).exists() else {}
        write_json_atomic(record, {'meta': machine_meta(), 'tags': {**kept, **out}})
    return out


def render(data: dict, results: Path, bench_file: str = 'bench-cpu.json') -> None:
    """Markdown table and plot next to the results file (test accuracy against the inference speed that
    ``bench_file``, next to it, reports)."""

    matplotlib.use('Agg')

    models = data['models']
    bench_path = results.parent / bench_file
    bench = current_rows(json.loads(bench_path.read_text()).get('models', {})) if bench_path.exists() else {}
    rec = data['recipe']
    header = ['model', 'test top-1 % (mean +- std)', 'seeds', 'min-max', 'test top-5 %', 'params (M)']
    header += [f'GMACs @{rec["img_size"]}', 'train img/s', 'CPU img/s @224']
    rows = []
    for name, m in sorted(models.items(), key=lambda kv: -kv[1]['top1']):
        s = data['summary'][name]
        speed = bench.get(name, {}).get('infer_img_s')
        rows.append(
            [f'`{name}`', f'{m["top1"]:.2f} +- {m["top1_std"]:.2f}', m['seeds'], f'{s["min"]:.2f}-{s["max"]:.2f}']
            + [f'{m["top5"]:.2f}', f'{m["params_m"]:.2f}', f'{m["gmacs"]:.3f}', f'{m["train_img_per_s"]:.0f}']
            + ['-' if speed is None else f'{speed:.1f}']
        )
    lines = markdown_table(header, rows)
    subset = 'all 60,000' if rec['train_samples'] is None else f'a seeded {rec["train_samples"]:,}-image subset'
    start = ''
    if rec.get('continues'):
        start = (
            f'each run starts from the exported weights of the finished `{rec["continues"]}` run of the same model and '
            f'seed (same data, subset and held-out share) and trains a second schedule on top of it: '
        )
    lines += [
        '',
        f'Recipe `{rec["name"]}`: {start}{rec["img_size"]} px grayscale, {subset} of the training split '
        + (
            f'(checkpoint selection on {rec["val_samples"] or "all"} images held out of the training split), '
            if rec.get('val_fraction', 0.1)
            else '(no validation split: the final weights are tested), '
        )
        + f'{rec["epochs"]} {"more " if rec.get("continues") else ""}epochs, '
        f'batch {rec["batch_size"]}, AdamW lr {rec["lr"]} wd {rec["weight_decay"]}, cosine with '
        f'{rec["warmup_epochs"]} warmup epoch, label smoothing {rec["smoothing"]}, drop path {rec["drop_path_rate"]}, '
        f'random-resized-crop scale {tuple(rec["scale"])}, RandAugment {rec["aa"] or "off"}, mixup {rec["mixup"]}, '
        f'EMA {"on" if rec["ema"] else "off"}; identical for every model. Accuracy on the 10,000 official test '
        f'images. Ranking identical for every seed: {data["ranking_stable_across_seeds"]}'
        + ''.join(
            f' (`{w["models"][0]}` and `{w["models"][1]}` swap places between seeds; their means are '
            f'{w["mean_gap"]:.2f} points apart)'
            for w in data.get('ranking_swaps', [])
        )
        + '. Measured '
        f'{data["meta"]["date"]} on '
        + (
            f'{data["meta"]["device"]} ({data["meta"].get("amp", "fp32")}). '
            if data['meta'].get('device')
            else f'{data["meta"]["cpu"]} ({data["meta"]["threads"]} threads). '
        )
        + f'Source: `model_cards/results/{results.name}`.',
    ]
    for r in data['runs']:
        c = r.get('continues')
        if c:
            lines += [
                '',
                f'`{r["model"]}` seed {r["seed"]}: {c["epochs"]} epochs of `{c["recipe"]}` then {rec["epochs"]} of '
                f'`{rec["name"]}`; held-out top-1 {c["val_top1"]:.2f} -> {r["val_top1"]:.2f}, test top-1 '
                f'{c["test_top1"]:.2f} -> {r["test_top1"]:.2f} ({r["test_top1"] - c["test_top1"]:+.2f} points).',
            ]
    if rec['train_samples'] is None:  # a full-data protocol: set against the dataset's published table
        best_name = max(models, key=lambda n: models[n]['top1'])
        gaps = ', '.join(
            f'{name} {acc:.1f}% ({models[best_name]["top1"] - acc:+.2f})' for name, acc in PUBLISHED.items()
        )
        lines += [
            '',
            f'Against the published full-data results of the Fashion-MNIST benchmark table (trained for far longer; '
            f'difference of `{best_name}` in points): {gaps}.',
        ]
    diag = {n: m for n, m in models.items() if 'train_loss' in m}
    if diag:
        header = [
            'model',
            'final train loss',
            'final val loss',
            'mean abs layer scale: conv blocks',
            'attention blocks',
        ]
        rows = [
            [f'`{name}`', f'{m["train_loss"]:.3f}', f'{m["val_loss"]:.3f}']
            + [
                f'{(m.get("layer_scale") or {})[k]:.3f}' if k in (m.get('layer_scale') or {}) else '-'
                for k in ('conv', 'attention')
            ]
            for name, m in sorted(diag.items(), key=lambda kv: -kv[1]['top1'])
        ]
        lines += ['', *markdown_table(header, rows)]
        lines += [
            '',
            'Losses of the last epoch (train: with label smoothing and augmentation; val: the held-out share of '
            'the training split), mean over seeds; layer scale: mean |gamma| of the residual-branch scales in the '
            'exported weights (models without layer scale: -).',
        ]
    per_class = {n: m['per_class'] for n, m in models.items() if m.get('per_class')}
    if per_class:
        order = sorted(per_class, key=lambda n: -models[n]['top1'])
        classes = list(per_class[order[0]])
        rows = [[c, *(f'{per_class[n].get(c, float("nan")):.1f}' for n in order)] for c in classes]
        lines += ['', *markdown_table(['test top-1 % per class', *(f'`{n}`' for n in order)], rows)]
    advice = pick_advice(data, bench)
    if advice:
        lines += ['', advice]
    write_atomic(results.with_suffix('.md'), '\n'.join(lines) + '\n')

    fig, ax = plt.subplots(figsize=(7, 4.5))
    use_speed = all(bench.get(n, {}).get('infer_img_s') for n in models)
    for name, m in models.items():
        x = bench[name]['infer_img_s'] if use_speed else m['gmacs']
        ours = name.startswith('convformer_')
        ax.errorbar(x, m['top1'], yerr=m['top1_std'], fmt='o', color='tab:orange' if ours else 'tab:blue', capsize=3)
        ax.annotate(name, (x, m['top1']), textcoords='offset points', xytext=(4, 4), fontsize=7)
    ax.set_xlabel(
        'CPU inference images/s (batch 32, 224 px, 2 cores)' if use_speed else f'GMACs at {rec["img_size"]} px'
    )
    ax.set_ylabel('Fashion-MNIST test top-1 (%)')
    ax.set_title(f'Recipe {rec["name"]}: accuracy vs speed (orange = ConvFormer fusion)')
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_figure_atomic(fig, results.with_suffix('.png'))
    plt.close(fig)
    curves = [r for r in data['runs'] if len((r.get('diagnostics') or {}).get('val_curve') or ()) > 1]
    if curves:
        draw_curves(curves, rec['name'], results.with_name(results.stem + '-curve.png'))


def draw_curves(runs: Sequence[dict], recipe: str, path: Path) -> None:
    """Held-out top-1 after each epoch of each run (is it still rising?), with the test top-1 it ended on."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in runs:
        curve, before = r['diagnostics']['val_curve'], r.get('continues') or {}
        first = before.get('val_curve') or []  # a continuation: the run it started from, then its own epochs
        label = f'{r["model"]} seed {r["seed"]}'
        if first:
            line = ax.plot(range(1, len(first) + 1), first, marker='o', ms=3, label=f'{label}, {before["recipe"]}')[0]
            ax.plot(len(first), before['test_top1'], marker='*', ms=9, color=line.get_color())
            ax.axvline(len(first) + 0.5, color='grey', lw=0.8, ls=':')
            label += f', then {recipe}'
        x = range(len(first) + 1, len(first) + len(curve) + 1)
        line = ax.plot(x, curve, marker='o', ms=3, label=label)[0]
        ax.plot(x[-1], r['test_top1'], marker='*', ms=9, color=line.get_color())
    ax.set_xlabel('epoch')
    ax.set_ylabel('held-out top-1 (%), carved from train')
    ax.set_title(f'Recipe {recipe}: held-out accuracy per epoch (star: test top-1 of the kept weights)', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    write_figure_atomic(fig, path)
    plt.close(fig)
