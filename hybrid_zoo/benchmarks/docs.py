"""Render everything people read from the result files: README tables, the placement diagram, model cards.

The README holds generated blocks between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` markers;
``hybrid-zoo render-docs`` rewrites them (after re-rendering the tables that quote ``bench-cpu.json``: the
Fashion-MNIST comparisons' speed column and the profile's verdicts), ``--check`` fails when a block or one of
those tables is stale. Nothing measured is typed by hand.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from hybrid_zoo.atomic import read_json
from hybrid_zoo.benchmarks import compare, profile_report
from hybrid_zoo.benchmarks.results import RESULTS_DIR, current_rows
from hybrid_zoo.benchmarks.speed_report import render_modes_only
from hybrid_zoo.benchmarks.tables import markdown_table
from hybrid_zoo.describe import describe, format_table
from hybrid_zoo.models.variants import FIRST_ATTENTION_STAGE

_log = logging.getLogger(__name__)
ROOT = RESULTS_DIR.parent.parent
FIGURES = ROOT / 'model_cards' / 'figures'


def _table(header: list[str], rows: list[list]) -> str:
    return '\n'.join(markdown_table(header, rows))


def model_table(results: Path) -> str | None:
    path = results / 'model_stats.json'
    if not path.exists():
        return None
    stats = read_json(path)
    bench_doc = read_json(results / 'bench-cpu.json') if (results / 'bench-cpu.json').exists() else {}
    bench = current_rows(bench_doc.get('models', {}))
    rate = (bench_doc.get('reference') or {}).get('onednn_gflops')
    fmnist = read_json(results / 'fmnist-cpu64.json')['summary'] if (results / 'fmnist-cpu64.json').exists() else {}
    rows = []
    for name, r in stats['models'].items():
        attn = 'A' if r.get('attn_every', 1) == 1 else f'A/{r["attn_every"]}'
        attends = [attn if i + 1 in r['attention_stages'] else 'C' for i in range(4)]
        rows.append(
            [
                f'`{name}`',
                r['fusion'],
                '-'.join(attends),
                '/'.join(map(str, r['widths'])),
                '-'.join(map(str, r['depths'])),
                f'{r["params_m"]:.2f}',
                f'{r["gmacs"]:.3f} ({r["attention_gmacs"]:.3f})',
                f'{bench[name]["infer_img_s"]:.1f}' if bench.get(name, {}).get('infer_img_s') else '-',
                f'{fmnist[name]["mean"]:.2f}' if name in fmnist else '-',
            ]
        )
    spread = ', '.join(f'{size} {100 * s:.1f}%' for size, s in stats['flop_spread_by_size'].items())
    meta = stats['meta']
    return (
        _table(
            [
                'model',
                'fusion',
                'stages (C conv, A attention, A/2 in every 2nd block)',
                'widths',
                'depths',
                'params (M)',
                'GMACs (attention)',
                'CPU img/s',
                'Fashion-MNIST top-1 %',
            ],
            rows,
        )
        + f'\n\nGMACs at {meta["input_size"][1]} px, 1000 classes, attention counted; placement spread (max/min - 1): '
        f'{spread} (`model_stats.json`). CPU img/s: eager, batch 32, 224 px, 2 threads'
        + (f', 1x1 conv at {rate:.0f} GFLOP/s' if rate else '')
        + ' ([report](docs/reports/cpu-speed.md)). Fashion-MNIST: mean test top-1, 64 px, `cpu64` recipe '
        '([report](docs/reports/fashion-mnist.md)).'
    )


def deploy_table(results: Path) -> str | None:
    path = results / 'deploy.json'
    if not path.exists():
        return None
    data = read_json(path)
    rows = [
        [
            f'`{name}`',
            f'{r["reparam_max_abs_diff"]:.1e}',
            f'{r.get("reparam_speedup", float("nan")):.3f}x',
            f'{r["compile_graphs"]} / {r["compile_graph_breaks"]}',
            f'{r["onnx_max_abs_diff"]:.1e}',
            f'{r["onnx_reparam_max_abs_diff"]:.1e}',
        ]
        for name, r in data['models'].items()
    ]
    meta = data['meta']
    shapes = ', '.join('x'.join(map(str, s)) for s in next(iter(data['models'].values()))['parity_shapes'])
    return (
        _table(
            [
                'model',
                'folded vs eager max abs diff',
                'folded speed-up (b16, CL)',
                'compile graphs / breaks',
                'ONNX vs eager',
                'ONNX (folded) vs eager',
            ],
            rows,
        )
        + f'\n\nParity over inputs {shapes} (B x C x H x W, one ONNX file, dynamic axes). '
        f'Measured {meta["date"]} on {meta["cpu"]}, {meta["threads"]} threads, torch {meta["torch"]}. '
        'Source: `model_cards/results/deploy.json` (`hybrid-zoo export --measure`).'
    )


def _modes(name: str) -> Callable[[Path], str | None]:
    """A block that is the deployment-modes part of a bench results file (its settings, modes table and problems)."""

    def block(results: Path) -> str | None:
        path = results / name
        return render_modes_only(read_json(path)) if path.exists() else None

    block.__name__ = name
    return block


def deploy_best_table(results: Path) -> str | None:
    """Per size, our fastest deployed form against the peers' fastest (any mode, and fp32 modes only), from the
    deployment-modes runs ``deploy-<size>.json``."""
    fp32 = ('eager', 'compiled', 'onnxruntime')
    rows = []
    for size in ('tiny', 'small', 'base'):
        path = results / f'deploy-{size}.json'
        if not path.exists():
            continue
        best: dict[tuple[bool, bool], tuple[float, str, str]] = {}
        for name, r in read_json(path)['models'].items():
            for mode, m in (r.get('modes') or {}).items():
                if m.get('img_s') is None:
                    continue
                for only_fp32 in (False, True):
                    key = (bool(r.get('ours')), only_fp32)
                    if (mode in fp32 or not only_fp32) and m['img_s'] > best.get(key, (0.0,))[0]:
                        best[key] = (m['img_s'], name, mode)
        if len(best) < 4:
            continue

        def cell(key: tuple[bool, bool], best: dict = best) -> str:
            img_s, name, mode = best[key]
            return f'`{name}` {mode} {img_s:.1f}'

        ratio = best[(True, False)][0] / best[(False, False)][0]
        rows.append([size, cell((True, False)), cell((False, False)), f'{ratio:.2f}x', cell((True, True)),
                     cell((False, True))])  # fmt: skip
    if not rows:
        return None
    head = ['size', 'our best deployed', 'best deployed peer', 'ours / peer', 'our best fp32 deployed',
            'best fp32 deployed peer']  # fmt: skip
    return _table(head, rows) + (
        '\n\nImages/s at batch 32, 224 px, 2 threads, one round per size; fp32 modes: eager (folded), compiled, '
        'onnxruntime. Source: `model_cards/results/deploy-<size>.json`.'
    )


def _md(name: str) -> Callable[[Path], str | None]:
    """A block that is a results file's own markdown, verbatim."""

    def block(results: Path) -> str | None:
        path = results / name
        return path.read_text().strip() if path.exists() else None

    block.__name__ = name
    return block


def front_pick(results: Path) -> str | None:
    """The tiny front as the table a user picks a model from (``front-tiny.json``, written by ``hybrid-zoo front``)."""
    from hybrid_zoo.benchmarks.front import pick_table

    path = results / 'front-tiny.json'
    return pick_table(read_json(path)) if path.exists() else None


def _page(name: str, prefix: str = '../../model_cards/results/') -> Callable[[Path], str | None]:
    """A block that is a results file's own markdown page without its title, its relative links made relative to a
    page of ``docs/reports/`` (``prefix``)."""

    def block(results: Path) -> str | None:
        path = results / name
        if not path.exists():
            return None
        body = path.read_text().strip().split('\n', 1)[1].strip()
        return re.sub(r'\]\((?![a-z]+:|/|\.\./)([^)\s]+)\)', lambda m: f']({prefix}{m.group(1)})', body)

    block.__name__ = name
    return block


def _architecture(row: dict) -> int:
    """The architecture version a comparison row was trained with (rows of v1 predate the field)."""
    return row.get('architecture_version') or 1


def design_table(results: Path) -> str | None:
    """Before/after of each design change tried on the CPU protocol: ``fmnist-cpu64-<variant>.json`` against the
    runs of the same model and architecture version without the change.

    A variant trained before an architecture change is set beside the baseline of its own version (the current
    comparison where it still holds that version, else a kept baseline such as ``fmnist-cpu64-v1.json``), never
    beside a later architecture's default. Baselines are the files without model kwargs; they are not variants.
    """
    base_path = results / 'fmnist-cpu64.json'
    if not base_path.exists():
        return None
    files = {path: read_json(path) for path in [base_path, *sorted(results.glob('fmnist-cpu64-*.json'))]}
    baselines = [(path, doc) for path, doc in files.items() if not doc.get('model_kwargs')]

    def baseline(name: str, version: int) -> tuple[Path, dict] | tuple[None, None]:
        for path, doc in baselines:
            row = doc['models'].get(name)
            if row is not None and _architecture(row) == version:
                return path, row
        return None, None

    parts = []
    for path, var in files.items():
        if not var.get('model_kwargs'):
            continue
        kwargs = ', '.join(f'{k}={v!r}' for k, v in var['model_kwargs'].items())
        rows, sources, versions = [], set(), set()
        for name, m in var['models'].items():
            source, b = baseline(name, _architecture(m))
            if b is None:
                continue
            sources.add(f'`{source.name}`')
            versions.add(f'v{_architecture(m)}')
            rows.append(
                [
                    f'`{name}`',
                    f'{b["top1"]:.2f} +- {b["top1_std"]:.2f} ({b["seeds"]})',
                    f'{m["top1"]:.2f} +- {m["top1_std"]:.2f} ({m["seeds"]})',
                    f'{m["top1"] - b["top1"]:+.2f}',
                    f'{b["train_loss"]:.3f} / {m["train_loss"]:.3f}'
                    if 'train_loss' in b and 'train_loss' in m
                    else '-',
                ]
            )
        if rows:
            head = ['model', 'without: top-1 % (seeds)', f'`{kwargs}`: top-1 % (seeds)', 'difference']
            head.append('final train loss: without / with')
            parts.append(
                f'Variant `{var["variant"]}` (`{kwargs}`, architecture {", ".join(sorted(versions))}), same recipe, '
                f'seeds counted in brackets, against the runs of the same architecture without the change '
                f'({", ".join(sorted(sources))}); source: `model_cards/results/{path.name}`.\n\n' + _table(head, rows)
            )
    return '\n\n'.join(parts) or None


def v3_screen_table(results: Path) -> str | None:
    """The architecture-v3 screen on ``cpu64``: each arm's test top-1 against v2's on the same seeds, the paired mean
    difference and its standard error, and the screen rule's verdict (drop below minus two standard errors)."""
    from hybrid_zoo.benchmarks.candidates import ARMS_V3, DESCRIPTIONS
    from hybrid_zoo.benchmarks.front import standard_error

    base_path = results / 'fmnist-cpu64.json'
    if not base_path.exists():
        return None
    from hybrid_zoo.models.variants import measured_on_current

    base = {  # the runs that describe the registered (v2) models: late's v1 rows too, which v2 left unchanged
        (r['model'], r['seed']): r['test_top1']
        for r in read_json(base_path)['runs']
        if measured_on_current(r['model'], {'architecture_version': _architecture(r)})
    }
    rows = []
    for arm in ARMS_V3:
        path = results / f'fmnist-cpu64-{arm}.json'
        if not path.exists():
            rows.append([f'`{arm}`', DESCRIPTIONS.get(arm, ''), '-', 'not run yet', '-', '-', 'pending', '-'])
            continue
        runs = read_json(path)['runs']
        for model in dict.fromkeys(r['model'] for r in runs):
            pairs = {
                r['seed']: (base[(model, r['seed'])], r['test_top1'])
                for r in runs
                if r['model'] == model and (model, r['seed']) in base
            }
            diffs = [b - a for a, b in pairs.values()]
            se = standard_error(diffs)
            mean = statistics.fmean(diffs) if diffs else None
            if se is None:
                verdict = 'pending (one seed)'
            elif mean < -2 * se:
                verdict = 'dropped'
            else:
                verdict = 'passes: price on front96'
            per_seed = ', '.join(f's{s}: {a:.2f} -> {b:.2f}' for s, (a, b) in sorted(pairs.items()))
            rows.append(
                [
                    f'`{arm}`',
                    DESCRIPTIONS.get(arm, ''),
                    f'`{model}`',
                    per_seed,
                    '-' if mean is None else f'{mean:+.2f}',
                    '-' if se is None else f'{se:.2f}',
                    verdict,
                    f'`{path.name}`',
                ]
            )
    head = ['arm', 'change', 'model', 'test top-1 %, v2 -> arm, per seed', 'paired mean', 'SE', 'screen', 'source']
    return (
        'Screen on `cpu64` (64 px, 5,000 images, 6 epochs), paired seeds against the v2 runs of `fmnist-cpu64.json`; '
        'an arm is dropped when its paired mean is below minus two standard errors.\n\n' + _table(head, rows)
    )


def per_round_img_s(bench: dict, model: str, mode: str) -> dict[int, float]:
    """Images/s of ``model`` in deployment ``mode`` per round of a bench run (batch / median timed batch)."""
    batch = bench['meta']['batch_size']
    out = {}
    for r in bench.get('raw', {}).get(model, []):
        t = ((r.get('modes') or {}).get(mode) or {}).get('t')
        if t:
            out[r['round']] = batch / statistics.median(t)
    return out


def v3_speed_table(results: Path, name: str = 'v3-silu-speed.json') -> str | None:
    """Each v3 arm against v2 in one interleaved bench run: per mode, the median and range of the per-round paired
    images/s ratios (part (b) of the rule: above 1 in the mode the arm targets)."""
    from hybrid_zoo.benchmarks.candidates import SEP

    path = results / name
    if not path.exists():
        return None
    bench = read_json(path)
    modes = bench['meta']['settings'].get('modes') or ['eager']
    rows = []
    for arm_model in (m for m in bench['models'] if SEP in m):
        base = arm_model.split(SEP)[0]
        cells = []
        for mode in modes:
            a, b = per_round_img_s(bench, arm_model, mode), per_round_img_s(bench, base, mode)
            ratios = [a[r] / b[r] for r in sorted(set(a) & set(b))]
            cells.append(
                f'{statistics.median(ratios):.2f}x [{min(ratios):.2f}-{max(ratios):.2f}] ({len(ratios)})'
                if ratios
                else '-'
            )
        rows.append([f'`{arm_model}`', f'`{base}`', *cells])
    m = bench['meta']
    return _table(['arm', 'v2', *(f'{mode}: arm / v2 [range] (rounds)' for mode in modes)], rows) + (
        f'\n\nMedian of the per-round paired ratios of images/s (batch {m["batch_size"]}, {m["img_size"]} px, '
        f'{m["threads"]} threads), one interleaved run of {m["rounds"]} rounds, {m["date"]} on {m["cpu"]}. Source: '
        f'`model_cards/results/{name}`.'
    )


def kv_ab_table(results: Path) -> str | None:
    """The K/V-pooling speed A/B (``tools/ab_kv_pooling.py``)."""
    path = results / 'ab-kv-pooling.json'
    if not path.exists():
        return None
    d = read_json(path)
    rows = [
        [
            arm,
            f'`{d[arm]["model_kwargs"] or "registry default"}`',
            f'{d[arm]["gmacs"]:.3f}',
            f'{d[arm]["img_per_s_median"]:.1f}',
            f'{d[arm]["attention_share_pct"]:.1f}',
            f'{d[arm]["pct_of_reference"]:.1f}',
            f'{d[arm]["ceiling_pct_of_reference"]:.1f}',
        ]
        for arm in ('default', 'kv_pool_stride16')
    ]
    head = ['arm', 'model kwargs', 'GMACs', 'img/s (median of 3)', 'attention %', '% of 1x1 rate', 'ceiling %']
    return _table(head, rows) + (
        f'\n\n`{d["model"]}`: speed-up {d["speedup"]:.3f}x with {d["gmacs_change_pct"]:+.1f}% GMACs; with the removed '
        f'GMACs put back as GEMMs at the 1x1 rate, {d["speedup_with_gmacs_restored"]:.3f}x. Measured {d["meta"]["date"]} '
        f'on {d["meta"]["cpu"]} ({d["meta"]["threads"]} threads). Source: `model_cards/results/ab-kv-pooling.json` '
        '(`python tools/ab_kv_pooling.py`).'
    )


def dw_ab_table(results: Path) -> str | None:
    path = results / 'ab-dw-kernel.json'
    if not path.exists():
        return None
    data = read_json(path)
    rows = []
    for name, d in data['models'].items():
        a, b = d['arms']['7'], d['arms']['5']
        rows.append(
            [
                f'`{name}`',
                f'{d["gmacs_change_pct"]:+.1f}%',
                f'{a["infer_img_s"]:.1f} -> {b["infer_img_s"]:.1f} ({d["infer_speedup"]:.3f}x)',
                f'{a["train_img_s"]:.2f} -> {b["train_img_s"]:.2f} ({d["train_speedup"]:.3f}x)',
                f'{a["train_depthwise_pct"]:.1f} -> {b["train_depthwise_pct"]:.1f}',
            ]
        )
    head = ['model', 'GMACs', 'inference img/s, 7x7 -> 5x5', 'training img/s', 'depthwise % of the training step']
    m = data['meta']
    return _table(head, rows) + (
        f'\n\nMedians of {m["rounds"]} interleaved rounds; measured {m["date"]} on {m["cpu"]} ({m["threads"]} threads). '
        'Source: `model_cards/results/ab-dw-kernel.json` (`python tools/ab_dw_kernel.py`).'
    )


def kernel_levers_table(results: Path) -> str | None:
    path = results / 'kernel-levers.json'
    if not path.exists():
        return None
    data = read_json(path)

    def rate(r: dict, side: str) -> str:
        text = '-' if r.get(f'{side}_gflop_s') is None else f'{r[f"{side}_gflop_s"]:.0f}'
        if r.get(f'{side}_weight_grad_gflop_s') is not None:
            text += f' (weight gradient {r[f"{side}_weight_grad_gflop_s"]:.0f})'
        return text

    rows = [[r['lever'], rate(r, 'used'), rate(r, 'lever'), f'{r["speedup"]:.2f}x'] for r in data['levers']]
    m = data['meta']
    faster = ', '.join(data['faster_than_used']) or 'none'
    return _table(
        ['lever (same function as what the models use)', 'used: GFLOP/s', 'lever: GFLOP/s', 'speed-up'], rows
    ) + (
        f'\n\nFaster than what the models use: {faster}. ReLU is a different function, listed as the floor an '
        f'elementwise op could reach. Measured {m["date"]} on {m["cpu"]} ({m["threads"]} threads, torch {m["torch"]}), '
        'fp32, allocator trimming off. Source: `model_cards/results/kernel-levers.json` (`python tools/kernel_levers.py`).'
    )


def pretrained_table(results: Path) -> str | None:
    path = results / 'pretrained.json'
    if not path.exists():
        return None
    data = read_json(path)
    rows = [
        [f'`{tag}`', f'`{e["repo_id"]}`', f'{e["test_top1"]:.2f}', f'{e["recipe"]}, seed {e["seed"]}', e['commit'][:10]]
        for tag, e in sorted(data['tags'].items())
    ]
    return _table(['timm name', 'Hub repo', 'test top-1 %', 'run', 'commit'], rows) + (
        f'\n\nPublished {data["meta"]["date"]} by `hybrid-zoo compare --publish`; source: `model_cards/results/pretrained.json`.'
    )


def int8_accuracy_table(results: Path, name: str = 'int8-fmnist.json', img_size: int = 64) -> str | None:
    """fp32 vs int8 top-1 of each Fashion-MNIST weight recorded in ``name`` (``hybrid-zoo export --int8 --record``):
    ONNX Runtime's file and, where recorded, the PT2E flow on the same calibration images."""
    path = results / name
    if not path.exists():
        return None
    data = read_json(path)

    def pt2e(e: dict, key: str, sign: str = '') -> str:
        return f'{e[key]:{sign}.2f}' if key in e else '-'

    rows = [
        [f'`{name}`', e['weights'], f'{e["fp32_top1"]:.2f}', f'{e["int8_top1"]:.2f}', f'{e["top1_change"]:+.2f}',
         f'{e["top1_agreement"]:.2f}', pt2e(e, 'pt2e_int8_top1'), pt2e(e, 'pt2e_top1_change', '+'),
         pt2e(e, 'pt2e_top1_agreement'), f'{e["file_mb"]:.1f}']
        for name, e in data['models'].items()
    ]  # fmt: skip
    head = ['model', 'weights', 'fp32 top-1 %', 'ORT int8 top-1 %', 'change (points)', 'same class %',
            'PT2E int8 top-1 %', 'change (points)', 'same class %', 'int8 ONNX MB']  # fmt: skip
    m = data['meta']
    return _table(head, rows) + (
        f"\n\nFashion-MNIST test split (10,000 images, {img_size} px); ORT int8 = ONNX Runtime static QDQ, PT2E = PyTorch's "
        'x86 inductor quantizer, both calibrated on the same 256 training images'
        + (
            ' (ONNX Runtime with 7-bit weights where the CPU had no VNNI: `reduce_range`)'
            if any(e.get('reduce_range') for e in data['models'].values())
            else ''
        )
        + (
            '; `-`: measured before PT2E was priced'
            if any('pt2e_int8_top1' not in e for e in data['models'].values())
            else ''
        )
        + '. '
        + f'Last measured {m["date"]} on {m["cpu"]}, torch {m["torch"]}. Source: '
        f'`model_cards/results/{name}`.'
    )


def front96_int8_table(results: Path) -> str | None:
    """int8 top-1 of the first seed of every model of the front yardstick (``front96-int8.json``)."""
    return int8_accuracy_table(results, 'front96-int8.json', 96)


def int8_profile_table(results: Path) -> str | None:
    """Where the time of each PT2E int8 model goes (``tools/int8_profile.py``): its speed-up over eager fp32 and the
    share of the int8 graph's time per kind of operation, with the largest fp32 kernel by name."""
    path = results / 'int8-profile.json'
    if not path.exists():
        return None
    data = read_json(path)
    cats = ['int8 conv/linear', 'fused fp32 kernels', 'attention', 'fp32 conv/linear', 'other']
    rows = []
    for name, r in data['models'].items():
        fp32 = [o for o in r['int8_top_ops'] if 'cpp_fused' in o['op']]
        kernel = fp32[0]['op'].split('cpp_fused_', 1)[1] if fp32 else ''
        kernel = kernel if len(kernel) <= 40 else kernel[:37] + '...'
        top = f'`{kernel}` {100 * fp32[0]["share"]:.0f}%' if fp32 else '-'
        rows.append(
            [f'`{name}`', f'{statistics.median(r["eager_img_s"]):.1f}', f'{statistics.median(r["int8_img_s"]):.1f}',
             f'{r["int8_speedup"]:.2f}x', *(f'{100 * r["int8_share_by_category"].get(c, 0.0):.0f}' for c in cats), top]
        )  # fmt: skip
    m = data['meta']
    head = ['model', 'eager img/s', 'int8 img/s', 'int8 / eager', *(f'{c} %' for c in cats), 'largest fp32 kernel']
    return _table(head, rows) + (
        f'\n\nMedians of {len(r["int8_img_s"])} rounds, models interleaved, batch {m["batch_size"]}, '
        f'{m["img_size"]} px, {m["threads"]} threads, {m["date"]} on {m["cpu"]}; shares: self CPU time of the profiled '
        'int8 batches (the profiler adds its own time to the int8 figures). Source: '
        '`model_cards/results/int8-profile.json` (`python tools/int8_profile.py`).'
    )


def fusion_ab_table(results: Path) -> str | None:
    """Eager images/s of each of our models folded with and without the oneDNN post-op fusion
    (``tools/ab_pointwise_fusion.py``): the median of paired per-batch ratios, timed in alternation."""
    path = results / 'ab-pointwise-fusion.json'
    if not path.exists():
        return None
    d = read_json(path)
    rows = [
        [f'`{name}`', str(e['fused_modules']), f'{e["plain_img_s"]:.1f}', f'{e["fused_img_s"]:.1f}',
         f'{e["speedup"]:.3f}x', f'{e["max_abs_diff"]:.1e}']
        for name, e in d['models'].items()
    ]  # fmt: skip
    head = ['model', 'fused convs', 'plain img/s', 'fused img/s', 'speed-up (paired)', 'max abs logit diff']
    m = d['meta']
    return _table(head, rows) + (
        f'\n\nBatch {d["batch_size"]} at {d["img_size"]} px, fp32, channels_last, {d["iters"]} timed batches per arm in '
        f'alternation; median speed-up {d["speedup_median"]:.3f}x (range {d["speedup_range"][0]:.3f}-'
        f'{d["speedup_range"][1]:.3f}x). Measured {m["date"]} on {m["cpu"]}, {m["threads"]} threads, torch '
        f'{m["torch"]}. Source: `model_cards/results/ab-pointwise-fusion.json` (`{d["command"]}`).'
    )


def targets_v1_v2_table(results: Path) -> str | None:
    """Each performance target (``peers.TARGETS``) as v1's bench (``bench-cpu-v1.json``) and v2's
    (``bench-cpu.json``) measured it: the median of the per-round ratios, each run interleaved with the peers."""
    old, new = results / 'bench-cpu-v1.json', results / 'bench-cpu.json'
    if not (old.exists() and new.exists()):
        return None
    a, b = read_json(old), read_json(new)
    v1 = {t['label']: t for t in a.get('targets', [])}

    def fmt(t: dict | None) -> str:
        if t is None or t.get('measured') is None:
            return '-'
        unit = '%' if t['metric'] == 'pct_onednn' else 'x'
        return f'{t["measured"]:.3g}{unit} [{t["low"]:.3g}-{t["high"]:.3g}]'

    rows = [[t['label'], fmt(v1.get(t['label'])), fmt(t), 'yes' if t['passed'] else 'no'] for t in b['targets']]
    drift = [
        abs(t['measured'] / v1[t['label']]['measured'] - 1)
        for t in b['targets']
        if t['model'].endswith('_late') and t['metric'] == 'infer_img_s' and t['label'] in v1
    ]
    met = sum(t['passed'] for t in b['targets'])
    was = sum(t['passed'] for t in v1.values())
    return _table(['target', 'v1', 'v2', 'v2 met'], rows) + (
        f'\n\nv2 meets {met} of {len(rows)} targets, v1 met {was}. Medians of per-round ratios [range]; v1: '
        f'`bench-cpu-v1.json` ({a["meta"]["date"]}, 1x1 conv {a["reference"]["onednn_gflops"]:.0f} GFLOP/s), v2: '
        f'`bench-cpu.json` ({b["meta"]["date"]}, {b["reference"]["onednn_gflops"]:.0f} GFLOP/s), both '
        "`hybrid-zoo bench --peers all --rounds 2` on the project's 2-core CPU. The late models did not change in "
        f'v2, yet their inference ratios moved by up to {100 * max(drift, default=0):.0f}% between the two runs: '
        "that is how far the two days' machines differ."
    )


def loader_throughput_table(results: Path) -> str | None:
    """Map-style against streamed input throughput (``tools/loader_throughput.py``)."""
    path = results / 'loader-throughput.json'
    if not path.exists():
        return None
    d = read_json(path)
    rows = [
        [arm, f'{v["median"]:.0f}', ', '.join(f'{r:.0f}' for r in v['rounds']), f'{d["ratio_to_map_style"][arm]:.2f}x']
        for arm, v in d['img_per_s'].items()
    ]
    m, setup = d['meta'], d['setup']
    return _table(['loader', 'img/s (median)', 'rounds', 'vs map-style'], rows) + (
        f'\n\n{d["data"]}; decode + timm training transform at {setup["img_size"]} px, batch {setup["batch"]}, '
        f'{setup["workers"]} DataLoader workers, no model, rounds interleaved in one process. Measured {m["date"]} on '
        f'{m["cpu"]} ({m["threads"]} threads). Source: `model_cards/results/loader-throughput.json` '
        '(`python tools/loader_throughput.py`).'
    )


def arch_v2_table(results: Path) -> str | None:
    """Architecture v2: every candidate's speed and yardstick accuracy against v1, and the decision
    (``tools/arch_v2.py report``)."""
    path = results / 'arch-v2.json'
    if not path.exists():
        return None
    # imported here: the module registers the candidate arms in timm, which no other block needs
    from hybrid_zoo.benchmarks.candidates import DESCRIPTIONS, arm_kwargs

    d = read_json(path)

    def ratio(r: dict | None) -> str:
        return '-' if not r else f'{r["median"]:.2f}x [{min(r["per_round"]):.2f}-{max(r["per_round"]):.2f}]'

    rows = []
    for arm, a in d['arms'].items():
        if arm == 'v1':
            continue
        depths = arm_kwargs(a.get('baseline', d['model']), arm)['depths']
        if 'not_priced' in a:
            diff, decision = a['not_priced'], 'not priced'
        else:
            diff = '-' if a['paired_mean'] is None else f'{a["paired_mean"]:+.2f}'
            diff += '' if a['paired_se'] is None else f' ± {a["paired_se"]:.2f} (n={len(a["seeds"])})'
            decision = {True: '**adopted: v2**', False: 'no', None: 'pending'}[a['adopted']]
        change = DESCRIPTIONS[arm] + ('' if 'baseline' not in a else f' (`{a["baseline"]}`)')
        rows.append([f'`{arm}`', change, '-'.join(map(str, depths)), ratio(a['infer_ratio']),
                     ratio(a['train_ratio']), diff, decision])  # fmt: skip
    noise = d['v1_seed_noise']
    head = ['arm', 'change', 'depths', 'inference x v1', 'training x v1', 'top-1 change, paired (points)', 'rule']
    if noise['std'] is None:
        return _table(head, rows)
    return _table(head, rows) + (
        f'\n\nv1: {noise["mean"]:.2f}% test top-1, seed std {noise["std"]:.2f} (seeds {noise["seeds"]}). Speed: paired '
        f'per-round ratios, one interleaved bench run (`{d["bench"]}`). Source: `model_cards/results/arch-v2.json`.'
    )


# What the throughput estimate of docs/scale.md assumes (no GPU run of ours exists): a sustained bf16 rate per GPU
# typical of conv-heavy models, the ImageNet-1k recipe's GPU count and schedule, and 3 passes' worth of GEMMs per
# training image (forward, and the two gradients of the backward).
ASSUMED_TFLOP_S = 100
IMAGENET_TRAIN_IMAGES = 1_281_167
RECIPE_GPUS, RECIPE_EPOCHS = 32, 300


def throughput_estimate(results: Path) -> str | None:
    """Training images/s per GPU and ImageNet-1k epoch times, estimated from the counted GMACs (not measured)."""
    path = results / 'model_stats.json'
    if not path.exists():
        return None
    stats = read_json(path)
    rows = []
    for name in ('convformer_tiny', 'convformer_small', 'convformer_base'):
        gmacs = stats['models'][name]['gmacs']
        gflop = 3 * 2 * gmacs
        per_gpu = ASSUMED_TFLOP_S * 1e3 / gflop
        epoch_s = IMAGENET_TRAIN_IMAGES / (per_gpu * RECIPE_GPUS)
        rows.append([f'`{name}`', f'{gmacs:.2f}', f'{gflop:.1f}', f'{per_gpu:,.0f}', f'{epoch_s:.0f}',
                     f'{epoch_s * RECIPE_EPOCHS / 3600:.1f}'])  # fmt: skip
    meta = stats['meta']
    head = ['model', 'GMACs @224', 'training GFLOP per image', 'images/s per GPU', f'epoch on {RECIPE_GPUS} GPUs (s)',
            f'{RECIPE_EPOCHS} epochs (h)']  # fmt: skip
    return _table(head, rows) + (
        f'\n\nEstimates, not measurements: 3 x 2 x GMACs FLOPs per training image at an assumed sustained '
        f'{ASSUMED_TFLOP_S} TFLOP/s per GPU in bf16, {IMAGENET_TRAIN_IMAGES:,} training images per epoch, compute '
        f'only (the input pipeline is the limit before that). GMACs: `model_cards/results/model_stats.json` '
        f'({meta["date"]}).'
    )


def describe_block(results: Path) -> str:
    """``hybrid-zoo describe convformer_small`` at 224 px, as it prints (computed from the model, not measured)."""

    rows = describe('convformer_small', (224, 224), 3)
    return (
        '```text\n$ hybrid-zoo describe convformer_small\n'
        + format_table('convformer_small', rows, (224, 224), 3)
        + '\n```'
    )


BLOCKS: dict[str, Callable[[Path], str | None]] = {
    'model_table': model_table,
    'describe_small': describe_block,
    'deploy_table': deploy_table,
    'bench_table': _md('bench-cpu.md'),
    'fmnist_table': _md('fmnist-cpu64.md'),
    'fmnist_long_table': _md('fmnist-long64.md'),
    'fmnist_long_more_table': _md('fmnist-long64x.md'),
    'fmnist_gpu_table': _md('fmnist-gpu64.md'),
    'front96_table': _md('fmnist-front96.md'),
    'front96_int8_table': front96_int8_table,
    'design_table': design_table,
    'v3_screen_table': v3_screen_table,
    'profile_table': _md('profile-cpu.md'),
    'pretrained_table': pretrained_table,
    'kv_ab_table': kv_ab_table,
    'kernel_levers_table': kernel_levers_table,
    'dw_ab_table': dw_ab_table,
    'loader_throughput': loader_throughput_table,
    'arch_v2_table': arch_v2_table,
    'int8_accuracy_table': int8_accuracy_table,
    'targets_v1_v2': targets_v1_v2_table,
    'fusion_ab_table': fusion_ab_table,
    'modes_table_tiny': _modes('deploy-tiny.json'),
    'modes_table_small': _modes('deploy-small.json'),
    'throughput_estimate': throughput_estimate,
    'deploy_best': deploy_best_table,
    'front_pick': front_pick,
    'v3_speed_table': v3_speed_table,
    'int8_profile_table': int8_profile_table,
    'front_tiny': _page('front-tiny.md'),
}


def render_readme(text: str, results: Path = RESULTS_DIR) -> str:
    """Replace every known generated block of ``text``; blocks without a results file say so."""
    for name, fn in BLOCKS.items():
        pattern = re.compile(rf'(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)', re.S)
        if not pattern.search(text):
            continue
        body = fn(results) or '_No results yet: `model_cards/results/` has no file for this table._'
        text = pattern.sub(lambda m, body=body: m.group(1) + body + '\n' + m.group(2), text)
    return text


def draw_placements(path: Path = FIGURES / 'placements.png') -> Path:
    """Diagram of the three fusion placements: stem, four stages (conv or attention), head."""

    matplotlib.use('Agg')

    colors = {'conv': '#8fb8de', 'attn': '#f4a261', 'io': '#d9d9d9'}
    fig, ax = plt.subplots(figsize=(11, 4.2))
    ax.set_xlim(0, 11)
    ax.set_ylim(-0.6, 3.4)
    ax.axis('off')
    strides = [4, 8, 16, 32]
    for row, fusion in enumerate(('late', 'mid', 'early')):
        y = row * 1.1
        ax.text(0.05, y + 0.35, fusion, fontsize=12, fontweight='bold', va='center')
        boxes = [('stem\n3x3 s2 x2', 'io')]
        for i, s in enumerate(strides):
            kind = 'attn' if i >= FIRST_ATTENTION_STAGE[fusion] else 'conv'
            label = f'S{i + 1} /{s}\n' + ('CPE + MHSA\n+ ConvFFN' if kind == 'attn' else 'dw7x7\nconv block')
            boxes.append((label, kind))
        boxes.append(('pool-LN-FC\nlogits', 'io'))
        for j, (label, kind) in enumerate(boxes):
            x = 0.9 + j * 1.65
            ax.add_patch(FancyBboxPatch((x, y), 1.45, 0.7, boxstyle='round,pad=0.03', fc=colors[kind], ec='black'))
            ax.text(x + 0.725, y + 0.35, label, ha='center', va='center', fontsize=8)
            if j:
                ax.annotate('', xy=(x, y + 0.35), xytext=(x - 0.2, y + 0.35), arrowprops=dict(arrowstyle='->'))
    ax.text(
        0.9,
        3.25,
        'ConvFormer fusion placements: where attention first appears (orange = attention stages, blue = conv stages)',
        fontsize=10,
    )
    ax.text(
        0.9,
        -0.45,
        'Input (B, C, H, W), any H, W >= 32; every stage keeps NCHW maps; strides 4/8/16/32; '
        'keys/values pooled 2x at stride 8.',
        fontsize=8,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches='tight', metadata={'Software': None})
    plt.close(fig)
    return path


def render_cards(results: Path = RESULTS_DIR) -> list[Path]:
    """One model card per architecture, when the card renderer is installed (the ``hub`` extra)."""
    try:
        from hybrid_zoo.hub import cards
    except ImportError as err:  # huggingface_hub missing: cards are optional for a model-only install
        _log.warning('model cards skipped: %s', err)
        return []
    return cards.render_architecture_cards(results / 'model_stats.json', ROOT / 'model_cards')


def rerender_comparisons(results: Path, out: Path | None = None) -> list[Path]:
    """Re-render the tables that quote ``bench-cpu.json`` from their own JSON and the current benchmark.

    The Fashion-MNIST comparisons (``fmnist-*``) show each model's CPU speed from the benchmark, and the
    profile's verdicts (``profile-cpu``) start from its target ratios, so a new benchmark run changes them;
    accuracies and profiles stay as measured. With ``out`` the files are written there instead.
    """

    bench = results / 'bench-cpu.json'
    if out is not None and bench.exists():
        shutil.copy(bench, out / bench.name)
    written = []
    profile_json = results / 'profile-cpu.json'
    paths = sorted(results.glob('fmnist-*.json'))
    if profile_json.exists():
        paths.append(profile_json)
    for path in paths:
        target = path if out is None else Path(shutil.copy(path, out / path.name))
        if path == profile_json:  # against the bench it was profiled with (a later architecture's would mislead)
            own = results / Path(read_json(path).get('bench') or bench.name).name
            own = own if own.exists() else bench
            if out is not None and own.exists() and not (out / own.name).exists():
                shutil.copy(own, out / own.name)
            profile_report.rerender(target, target.parent / own.name)
        else:
            compare.render(read_json(path), target)
        written.append(target.with_suffix('.md'))
    return written


def _stale_comparisons(results: Path) -> list[str]:

    with tempfile.TemporaryDirectory() as tmp:
        fresh = rerender_comparisons(results, Path(tmp))
        return [
            f.name for f in fresh if not (results / f.name).exists() or (results / f.name).read_text() != f.read_text()
        ]


def documents(readme: Path) -> list[Path]:
    """The files with generated blocks: the README, every page of ``docs/`` beside it and its reports."""
    return [
        readme,
        *sorted((readme.parent / 'docs').glob('*.md')),
        *sorted((readme.parent / 'docs' / 'reports').glob('*.md')),
    ]


_BLOCK = re.compile(r'<!-- BEGIN (\w+) -->\n.*?<!-- END \1 -->', re.S)
_FENCE = re.compile(r'^```(\w*)\n(.*?)^```$', re.S | re.M)
# what prose may not state unless a rendered block of the page states it too: decimals (82.28, 1.7x, 0.4 points)
# and percentages (91.56%, +2%); integers stay free, they are mostly sizes and settings (6 epochs, 3x3 conv)
_CLAIM = re.compile(r'(?<![\w.])[-+]?(\d+(?:\.\d+)?)%|(?<![\w.])[-+]?(\d+\.\d+)(?![\w.]*\d)')
_NUMBER = re.compile(r'\d+(?:\.\d+)?')
_LINK = re.compile(r'\]\(([^)\s]+)\)')
# words that belong to the project's tracker, not to a reader ("issue 12", "the bench issue")
_TRACKER = re.compile(r'\b(?:issue #?\d+|the \w+ issue)\b', re.I)
# a report's first line: its subject, then the date of its measurements and the architecture version they are of
_REPORT_TITLE = re.compile(r'# .+\(\d{4}-\d{2}-\d{2}, architecture v\d+[^)]*\)\n')


def _prose(text: str) -> str:
    """``text`` without generated blocks, fenced code, code spans, HTML comments and link targets."""
    for pattern in (_BLOCK, _FENCE, re.compile(r'<!--.*?-->', re.S), re.compile(r'`[^`]+`'), _LINK):
        text = pattern.sub(' ', text)
    return text


def unquoted_numbers(text: str) -> list[str]:
    """The numeric claims of ``text``'s prose that no generated block of ``text`` contains.

    A measured number is typed by hand nowhere: prose cites a results file, or repeats a figure that a block on
    the same page renders from one (so that a re-rendered block and its prose cannot drift apart unnoticed).
    """
    rendered = {n for block in _BLOCK.finditer(text) for n in _NUMBER.findall(block.group(0))}
    claims = [m.group(0) for m in _CLAIM.finditer(_prose(text))]
    return [c for c in claims if _NUMBER.search(c).group(0) not in rendered]


def dangling_links(doc: Path) -> list[str]:
    """Relative links and images of ``doc`` that lead nowhere (anchors and web addresses are not followed)."""
    text = _FENCE.sub(' ', doc.read_text())
    targets = [t.split('#')[0] for t in _LINK.findall(text)]
    return [
        t for t in targets if t and '://' not in t and not t.startswith('mailto:') and not (doc.parent / t).exists()
    ]


def unstopped_jobs(text: str) -> list[str]:
    """Fenced bash blocks that start a background job (a server) and neither stop nor wait for it."""
    problems = []
    for lang, code in _FENCE.findall(text):
        lines = [line.split(' #')[0].rstrip() for line in code.splitlines()]
        starts = [line.strip() for line in lines if line.endswith('&') and not line.endswith('&&')]
        if lang in ('bash', 'sh') and starts and not re.search(r'^\s*(kill|wait)\b|;\s*(kill|wait)\b', code, re.M):
            problems.extend(starts)
    return problems


def unserved_pushes(text: str) -> list[str]:
    """Pushes in fenced bash blocks to a literal namespace that the block does not serve.

    A block that pushes to ``NS/name`` (``hybrid-zoo push``, ``--push-to``) runs only where ``NS`` exists and takes
    the token: on the bundled Hub server, which the block then starts with ``NS`` as a user of its tokens or an
    ``--org``, and points ``HF_ENDPOINT`` at. ``<org>``-style placeholders are the reader's own namespace.
    """
    problems = []
    for lang, code in _FENCE.findall(text):
        if lang not in ('bash', 'sh'):
            continue
        code = code.replace('\\\n', ' ')
        pushed = re.findall(r'hybrid-zoo push \S+ ([^\s/<]+)/', code) + re.findall(r'--push-to ([^\s/<]+)/', code)
        served = set(re.findall(r'HZ_HUB_TOKENS=(\w[\w-]*):', code)) | set(re.findall(r'--org ([\w-]+):', code))
        local = 'hybrid-zoo hub-server' in code and 'HF_ENDPOINT=' in code
        problems.extend(
            f'pushes to {ns}/ without a server serving {ns}' for ns in pushed if not (local and ns in served)
        )
    return problems


def check_documents(readme: Path, results: Path) -> list[str]:
    """Everything ``render-docs --check`` finds wrong with the documents beside ``readme``, one line each."""
    problems = []
    for doc in documents(readme):
        text = doc.read_text()
        if render_readme(text, results) != text:
            problems.append(f'{doc} is stale: run `hybrid-zoo render-docs`')
        problems += [f'{doc}: numeric claim {c!r} is in no rendered block of the page' for c in unquoted_numbers(text)]
        problems += [f'{doc}: link to {t} leads nowhere' for t in dangling_links(doc)]
        problems += [f'{doc}: background job never stopped: {j}' for j in unstopped_jobs(text)]
        problems += [f'{doc}: {p}' for p in unserved_pushes(text)]
        problems += [f'{doc}: project-tracker words {w!r}' for w in _TRACKER.findall(_FENCE.sub(' ', text))]
    for report in sorted((readme.parent / 'docs' / 'reports').glob('*.md')):
        if not _REPORT_TITLE.match(report.read_text()):
            problems.append(f'{report}: the title must end in (YYYY-MM-DD, architecture vN)')
    cards = readme.parent / 'model_cards'
    problems += [f'{card}: link leads nowhere' for card in sorted(cards.glob('*.md')) if not card.exists()]
    return problems


def stale_outputs(readme: str | os.PathLike | None = None, results: str | os.PathLike | None = None) -> list[str]:
    """What ``render-docs --check`` finds, one line each (empty when everything is current): comparison tables stale
    against the benchmark, documents (``readme`` and the ``docs/`` pages beside it) whose generated blocks differ from
    what the result files in ``results`` give, and the other problems of :func:`check_documents`."""
    readme, results = Path(readme or ROOT / 'README.md'), Path(results or RESULTS_DIR)
    lines = []
    stale = _stale_comparisons(results)
    if stale:
        lines.append(f'stale against bench-cpu.json: {", ".join(stale)}: run `hybrid-zoo render-docs`')
    return lines + check_documents(readme, results)


def render_all(
    readme: str | os.PathLike | None = None, results: str | os.PathLike | None = None, figures: bool = True
) -> list[str]:
    """Re-render the comparison tables, the generated blocks of ``readme`` and the ``docs/`` pages beside it, and
    (``figures``) the placement diagram and the model cards; one line per file written."""
    readme, results = Path(readme or ROOT / 'README.md'), Path(results or RESULTS_DIR)
    lines = [f'rendered {md}' for md in rerender_comparisons(results)]
    for doc in documents(readme):
        doc.write_text(render_readme(doc.read_text(), results))
        lines.append(f'updated {doc}')
    if figures:
        lines.append(f'drew {draw_placements()}')
        lines += [f'wrote {card}' for card in render_cards(results)]
    return lines
