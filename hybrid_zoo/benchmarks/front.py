"""The accuracy-speed front: yardstick top-1 against measured images/s, per deployment mode.

Accuracy comes from a ``hybrid-zoo compare`` results file (paired seeds: every model trained with the same seeds on the
same data), speed from a ``hybrid-zoo bench --modes ...`` results file (interleaved rounds; each mode's per-round
range), the int8 change of accuracy from ``hybrid-zoo export --int8 --evaluate-split test --record`` records.

The rule, written before the runs: model A **dominates** B in a mode when A is faster beyond both per-round ranges
(A's slowest round beats B's fastest) and more accurate by more than two standard errors of the paired (same-seed)
difference. A pair where each wins one axis that way is a **trade-off**; anything else is **undecided** (ranges
overlap, the difference is within two standard errors, or one seed gives no standard error) and is listed as such.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scipy import stats

from hybrid_zoo.benchmarks.tables import markdown_table

# Published ImageNet-1k top-1 (%) of each peer's best ImageNet-1k-only weights (no in12k/in22k pretraining; "d":
# distilled from an ImageNet-1k teacher where timm has no other ImageNet-1k-only tag), at 224 px unless noted
IMAGENET_SOURCE = (
    "timm's results/results-imagenet.csv (huggingface/pytorch-image-models, last changed in commit "
    '4e5207c7bb6592474ca56e28b2cf85be8f1a550f, 2025-10-30)'
)
IMAGENET_TOP1: dict[str, tuple[float, str]] = {
    'tiny_vit_5m_224': (79.20, 'in1k'),
    'fastvit_t12': (79.28, 'apple_in1k, 256 px'),
    'efficientformerv2_s1': (79.68, 'snap_dist_in1k, d'),
    'coatnet_nano_rw_224': (81.70, 'sw_in1k'),
    'convnext_nano': (80.76, 'd1h_in1k'),
    'repvit_m1_0': (80.15, 'dist_in1k, d'),
    'mobilenetv4_conv_medium': (79.09, 'e500_r224_in1k'),
    'fastvit_sa24': (82.71, 'apple_in1k, 256 px'),
    'convnext_tiny': (82.07, 'fb_in1k'),
    'coatnet_0_rw_224': (82.39, 'sw_in1k'),
    'caformer_s18': (83.66, 'sail_in1k'),
}

MODES = ('eager', 'int8-pt2e')
SHORT_LABEL = {'eager': 'eager', 'compiled': 'compiled', 'int8-pt2e': 'int8'}
MODE_LABEL = {'eager': 'eager fp32', 'compiled': 'compiled fp32 (inductor)', 'int8-pt2e': 'int8 (PT2E + inductor)'}


def standard_error(values: Sequence[float]) -> float | None:
    """Standard error of the mean of ``values`` (None below two values)."""
    values = list(values)
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


@dataclass(frozen=True)
class Point:
    """One model in one mode: its yardstick accuracy per seed and its speed with the per-round range."""

    model: str
    ours: bool
    per_seed: Mapping[int, float]
    img_s: float | None
    img_s_min: float | None
    img_s_max: float | None
    int8_change: float | None = None  # points added to every seed's top-1 (the deployed form's measured change)
    error: str | None = None  # why the mode has no speed (a build that failed)
    notes: tuple[str, ...] = field(default=())

    @property
    def n(self) -> int:
        return len(self.per_seed)

    @property
    def top1(self) -> float:
        return statistics.fmean(self.per_seed.values())

    @property
    def se(self) -> float | None:
        """Standard error of the mean over seeds (None with one seed)."""
        return standard_error(self.per_seed.values())


def points(accuracy: dict, speed: dict, mode: str, int8: dict | None = None) -> list[Point]:
    """Every model that has both a yardstick accuracy and a ``mode`` entry in the speed file.

    ``accuracy``: a compare results document; ``speed``: a bench results document whose rows carry ``modes``;
    ``int8``: ``{'models': {name: record}}`` of ``export --int8 --record``: for an int8 mode, each seed's top-1 is
    shifted by the PT2E change measured on one trained copy of the model (``pt2e_top1_change``).
    """
    from hybrid_zoo.benchmarks.results import current_rows

    per_seed: dict[str, dict[int, float]] = {}
    for run in accuracy['runs']:
        if current_rows({run['model']: run}):
            per_seed.setdefault(run['model'], {})[run['seed']] = run['test_top1']
    rows = current_rows(speed.get('models', {}))
    out = []
    for name, seeds in per_seed.items():
        row = rows.get(name)
        if row is None or mode not in (row.get('modes') or {}):
            continue
        m = row['modes'][mode]
        change = None
        if mode.startswith('int8'):
            record = ((int8 or {}).get('models') or {}).get(name) or {}
            change = record.get('pt2e_top1_change')
        shifted = {s: v + (change or 0.0) for s, v in seeds.items()}
        out.append(
            Point(
                model=name,
                ours=bool(row.get('ours')) or name.startswith('convformer_'),
                per_seed=shifted,
                img_s=m.get('img_s'),
                img_s_min=m.get('img_s_min', m.get('img_s')),
                img_s_max=m.get('img_s_max', m.get('img_s')),
                int8_change=change,
                error=m.get('error'),
            )
        )
    return sorted(out, key=lambda p: -(p.img_s or 0.0))


def paired_difference(a: Point, b: Point) -> tuple[float, float | None, int]:
    """Mean and standard error of ``a - b`` over the seeds both have (SE None below two seeds)."""
    seeds = sorted(set(a.per_seed) & set(b.per_seed))
    diffs = [a.per_seed[s] - b.per_seed[s] for s in seeds]
    if not diffs:
        return math.nan, None, 0
    return statistics.fmean(diffs), standard_error(diffs), len(diffs)


def _faster(a: Point, b: Point) -> bool:
    """``a`` faster beyond both per-round ranges: its slowest round beats ``b``'s fastest."""
    return None not in (a.img_s_min, b.img_s_max) and a.img_s_min > b.img_s_max


def verdict(a: Point, b: Point) -> dict:
    """How ``a`` and ``b`` stand (the module docstring's rule): dominates / dominated / trade-off / undecided."""
    diff, se, n = paired_difference(a, b)
    more_acc = se is not None and diff > 2 * se
    less_acc = se is not None and -diff > 2 * se
    faster, slower = _faster(a, b), _faster(b, a)
    if faster and more_acc:
        status = 'dominates'
    elif slower and less_acc:
        status = 'dominated'
    elif (faster and less_acc) or (slower and more_acc):
        status = 'trade-off'
    else:
        status = 'undecided'
    why = []
    if not (faster or slower):
        why.append('speed ranges overlap')
    if se is None:
        why.append(f'{n} paired seed(s): no standard error')
    elif not (more_acc or less_acc):
        why.append(f'accuracy difference {diff:+.2f} within 2 SE ({2 * se:.2f})')
    return {
        'a': a.model,
        'b': b.model,
        'status': status,
        'speed_ratio': round(a.img_s / b.img_s, 3) if a.img_s and b.img_s else None,
        'top1_diff': round(diff, 3),
        'top1_diff_se': None if se is None else round(se, 3),
        'seeds': n,
        'why_undecided': '; '.join(why) if status == 'undecided' else None,
    }


def dominance(pts: Sequence[Point]) -> list[dict]:
    """Every unordered pair once, oriented so that ``a`` is the faster (by median images/s)."""
    timed = [p for p in pts if p.img_s]
    out = []
    for i, a in enumerate(timed):
        for b in timed[i + 1 :]:
            first, second = (a, b) if a.img_s >= b.img_s else (b, a)
            out.append(verdict(first, second))
    return out


def left_open(pairs: Sequence[dict]) -> int:
    """How many of ``pairs`` the rule leaves open (undecided or a trade-off)."""
    return sum(p['status'] in ('undecided', 'trade-off') for p in pairs)


def dominated_by(pairs: Sequence[dict]) -> dict[str, list[dict]]:
    """Per model, the pairs in which it is dominated (with by whom, how much faster and how much more accurate)."""
    out: dict[str, list[dict]] = {}
    for p in pairs:
        if p['status'] == 'dominates':
            out.setdefault(p['b'], []).append(p)
        elif p['status'] == 'dominated':
            out.setdefault(p['a'], []).append(p)
    return out


def rank_correlation(pts: Sequence[Point], imagenet: Mapping[str, tuple[float, str]] = IMAGENET_TOP1) -> dict:
    """Spearman rank correlation between the peers' yardstick means and their published ImageNet-1k top-1."""
    peers = [p for p in pts if not p.ours and p.model in imagenet]
    out = {'models': [p.model for p in peers], 'n': len(peers), 'rho': None, 'p_value': None, 'positive': None}
    if len(peers) >= 3:
        rho, pval = stats.spearmanr([p.top1 for p in peers], [imagenet[p.model][0] for p in peers])
        out.update(rho=round(float(rho), 3), p_value=round(float(pval), 3), positive=bool(rho > 0))
    return out


def summarise(accuracy: dict, speed: dict, int8: dict | None = None, modes: Sequence[str] = MODES) -> dict:
    """The front of every mode: its points, the pairwise verdicts, who is dominated, and the rank correlation."""
    out = {}
    for mode in modes:
        pts = points(accuracy, speed, mode, int8)
        pairs = dominance(pts)
        out[mode] = {
            'points': [
                {
                    'model': p.model,
                    'ours': p.ours,
                    'top1': round(p.top1, 3),
                    'top1_se': None if p.se is None else round(p.se, 3),
                    'seeds': p.n,
                    'img_s': p.img_s,
                    'img_s_min': p.img_s_min,
                    'img_s_max': p.img_s_max,
                    'int8_change': p.int8_change,
                    'error': p.error,
                }
                for p in pts
            ],
            'pairs': pairs,
            'dominated_by': {k: [p['a'] if p['b'] == k else p['b'] for p in v] for k, v in dominated_by(pairs).items()},
        }
    first = points(accuracy, speed, modes[0], int8)
    out['rank_correlation'] = rank_correlation(first)
    return out


def render_markdown(front: dict, *, title: str, sources: Sequence[str]) -> str:
    """The front as a page: per mode a table of the models (dominated ones marked, with by whom) and the undecided and
    trade-off pairs; then the rank correlation with ImageNet."""
    lines = [f'# {title}', '', __doc__.split('\n\n', 2)[2].strip(), '']
    meta = front.get('meta') or {}
    if meta.get('reference_1x1_gflops'):
        lines += [
            f'Speeds measured {meta["speed_measured"]} on {meta["cpu"]} ({meta["threads"]} threads), where a '
            f'channels_last 1x1 conv ran at {meta["reference_1x1_gflops"]:.0f} GFLOP/s. The front depends on the '
            'host: on a host with a slower 1x1 conv the conv-heavy models lose ground to the attention-heavy ones, '
            'so read the speeds as ratios measured side by side in one run, on this host.',
            '',
        ]
    for mode in (m for m, v in front.items() if isinstance(v, dict) and 'points' in v):
        f = front[mode]
        lines += [f'## {MODE_LABEL.get(mode, mode)}', '', f'![front, {mode}](front-tiny-{mode}.png)', '']
        pairs = {(p['a'], p['b']): p for p in f['pairs']}
        rows = []
        for pt in f['points']:
            beaten = []
            for other in f['dominated_by'].get(pt['model'], []):
                p = pairs.get((other, pt['model'])) or pairs.get((pt['model'], other))
                ratio = p['speed_ratio'] if p['a'] == other else (1 / p['speed_ratio'] if p['speed_ratio'] else None)
                gap = p['top1_diff'] if p['a'] == other else -p['top1_diff']
                beaten.append(f'`{other}` ({ratio:.2f}x, {gap:+.2f} pt)' if ratio else f'`{other}`')
            se = '-' if pt['top1_se'] is None else f'{pt["top1_se"]:.2f}'
            speed = (
                f'{pt["img_s"]:.1f} [{pt["img_s_min"]:.1f}-{pt["img_s_max"]:.1f}]'
                if pt['img_s']
                else f'failed: {pt["error"]}'
            )
            rows.append(
                [
                    f'**`{pt["model"]}`**' if pt['ours'] else f'`{pt["model"]}`',
                    f'{pt["top1"]:.2f}',
                    se,
                    pt['seeds'],
                    speed,
                    '-' if pt['int8_change'] is None else f'{pt["int8_change"]:+.2f}',
                    ', '.join(beaten) if beaten else 'on the front',
                ]
            )
        header = [
            'model (ours bold)',
            'top-1 %',
            'SE',
            'seeds',
            'img/s [per-round range]',
            'int8 change',
            'dominated by',
        ]
        lines += [*markdown_table(header, rows), '']
        open_pairs = [p for p in f['pairs'] if p['status'] in ('undecided', 'trade-off')]
        involving_ours = [p for p in open_pairs if p['a'].startswith('convformer_') or p['b'].startswith('convformer_')]
        if involving_ours:
            lines += [f'Pairs with one of ours that the rule leaves open ({mode}):', '']
            rows = [
                [
                    f'`{p["a"]}` vs `{p["b"]}`',
                    p['status'],
                    f'{p["speed_ratio"]:.2f}x' if p['speed_ratio'] else '-',
                    f'{p["top1_diff"]:+.2f}' + ('' if p['top1_diff_se'] is None else f' +- {p["top1_diff_se"]:.2f}'),
                    p['why_undecided'] or '',
                ]
                for p in involving_ours
            ]
            lines += [*markdown_table(['faster vs slower', 'status', 'speed', 'top-1 diff (SE)', 'why'], rows), '']
    rc = front['rank_correlation']
    lines += ['## Does the yardstick order the peers as ImageNet does?', '']
    if rc['rho'] is None:
        lines += [f'Not yet: {rc["n"]} peer(s) with both numbers (at least 3 needed).', '']
    else:
        flag = '' if rc['positive'] else ' **Not positive: this yardstick does not order the peers as ImageNet does.**'
        lines += [
            f"Spearman rank correlation between the peers' yardstick top-1 and their published ImageNet-1k top-1: "
            f'rho = {rc["rho"]:+.2f} (p = {rc["p_value"]:.2f}, {rc["n"]} peers).{flag}',
            '',
        ]
    lines += ['ImageNet-1k top-1: ' + IMAGENET_SOURCE + '.', '', 'Sources: ' + ', '.join(f'`{s}`' for s in sources)]
    return '\n'.join(lines) + '\n'


def pick_table(front: dict, modes: Sequence[str] = MODES) -> str | None:
    """One row per model with its yardstick top-1 and, per mode of ``modes`` the front has, its images/s and who
    dominates it: the table a user picks from (the front's summary, as ``write_front`` saves it); None when the front
    has none of ``modes``."""
    modes = [m for m in modes if isinstance(front.get(m), dict) and 'points' in front[m]]
    if not modes:
        return None
    by_mode = {m: {p['model']: p for p in front[m]['points']} for m in modes}
    first = front[modes[0]]['points']
    rows = []
    for pt in first:
        se = '' if pt['top1_se'] is None else f' +- {pt["top1_se"]:.2f}'
        row = [f'**`{pt["model"]}`**' if pt['ours'] else f'`{pt["model"]}`', f'{pt["top1"]:.2f}{se} ({pt["seeds"]})']
        for mode in modes:
            q = by_mode[mode].get(pt['model'])
            row.append(f'{q["img_s"]:.1f}' if q and q['img_s'] else 'failed' if q else '-')
            beaten = front[mode]['dominated_by'].get(pt['model'], [])
            row.append(', '.join(f'`{b}`' for b in beaten) or '-')
        rows.append(row)
    header = ['model (ours bold)', 'top-1 % +- SE (seeds)']
    for mode in modes:
        header += [f'{SHORT_LABEL.get(mode, mode)} img/s', f'dominated in {SHORT_LABEL.get(mode, mode)} by']
    open_pairs = {m: left_open(front[m]['pairs']) for m in modes}
    pairs = {m: len(front[m]['pairs']) for m in modes}
    meta = front.get('meta') or {}
    note = (
        f'Top-1: `{meta.get("recipe")}` test images; img/s: batch 32, 224 px, {meta.get("threads")} threads, '
        f'{meta.get("speed_measured")}; int8: PT2E. Dominated: slower beyond both per-round ranges, less accurate by '
        '2 SE; pairs left open: '
        + ', '.join(f'{SHORT_LABEL.get(m, m)} {open_pairs[m]} of {pairs[m]}' for m in modes)
        + '.'
    )
    return '\n'.join(markdown_table(header, rows)) + '\n\n' + note


def render_plot(front: dict, mode: str):
    """Measured images/s (x, per-round range) against yardstick top-1 (y, +-1 SE); ours in orange, dominated hollow."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    f = front[mode]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for pt in f['points']:
        if not pt['img_s']:
            continue
        color = 'tab:orange' if pt['ours'] else 'tab:blue'
        dominated = pt['model'] in f['dominated_by']
        xerr = [[pt['img_s'] - pt['img_s_min']], [pt['img_s_max'] - pt['img_s']]]
        ax.errorbar(
            pt['img_s'],
            pt['top1'],
            xerr=xerr,
            yerr=pt['top1_se'] or 0.0,
            fmt='o',
            color=color,
            mfc='white' if dominated else color,
            capsize=3,
        )
        ax.annotate(pt['model'], (pt['img_s'], pt['top1']), textcoords='offset points', xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f'{MODE_LABEL.get(mode, mode)} images/s (batch 32, 224 px; bar: per-round range)')
    ax.set_ylabel('yardstick top-1 % (bar: +-1 SE over seeds)')
    ax.set_title(f'Accuracy-speed front, {mode} (orange: ours; hollow: dominated)', fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def write_front(
    accuracy: str | os.PathLike,
    speed: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    int8: str | os.PathLike | None = None,
    name: str = 'front-tiny',
    title: str = 'Accuracy-speed front, tiny size',
    modes: Sequence[str] = MODES,
) -> dict:
    """Read the three results files, write ``<out_dir>/<name>.json`` (the summary), ``.md`` and one PNG per mode.

    Raises:
        FileNotFoundError: the accuracy or speed file is missing.
        ValueError: the speed file has no row with one of ``modes`` (run ``hybrid-zoo bench --modes ...``).
    """
    from hybrid_zoo.atomic import read_json, write_atomic, write_figure_atomic, write_json_atomic

    acc_doc, speed_doc = read_json(accuracy), read_json(speed)
    int8_doc = read_json(int8) if int8 and Path(int8).exists() else None
    missing = [m for m in modes if not any(m in (r.get('modes') or {}) for r in speed_doc.get('models', {}).values())]
    if missing:
        raise ValueError(f'{speed}: expected rows measured in modes {list(modes)}, none has {missing}')
    summary = summarise(acc_doc, speed_doc, int8_doc, modes)
    summary['meta'] = {
        'accuracy': Path(accuracy).name,
        'speed': Path(speed).name,
        'int8': Path(int8).name if int8_doc else None,
        'recipe': acc_doc.get('recipe', {}).get('name'),
        'speed_measured': speed_doc.get('meta', {}).get('date'),
        'reference_1x1_gflops': (speed_doc.get('reference') or {}).get('onednn_gflops'),
        'cpu': speed_doc.get('meta', {}).get('cpu'),
        'threads': speed_doc.get('meta', {}).get('threads'),
    }
    out = Path(out_dir)
    sources = [summary['meta'][k] for k in ('accuracy', 'speed', 'int8') if summary['meta'][k]]
    page = render_markdown(summary, title=title, sources=sources).replace('front-tiny-', f'{name}-')
    write_json_atomic(out / f'{name}.json', summary)
    write_atomic(out / f'{name}.md', page)
    import matplotlib.pyplot as plt

    for mode in modes:
        fig = render_plot(summary, mode)
        write_figure_atomic(fig, out / f'{name}-{mode}.png')
        plt.close(fig)
    return summary
