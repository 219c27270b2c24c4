"""What a benchmark run means and how it is shown: rows from the workers' samples, the issue's targets, the
markdown table, CSV and plot.

Nothing here measures or imports torch: it works on the result document of :func:`hybrid_zoo.benchmarks.speed.measure`
(or a saved ``bench-cpu.json``), so tables and plots can be re-rendered without measuring again.
"""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hybrid_zoo.atomic import write_atomic, write_json_atomic
from hybrid_zoo.benchmarks.peers import SIZES, TARGETS, Target
from hybrid_zoo.benchmarks.tables import markdown_table

SCHEMA = 'hybrid_zoo.bench/1'  # a file-format id, unchanged by module moves
REFERENCE = '__reference__'  # the task (and ``raw`` key) of the machine's reference GEMM rates
CONTENDED = 0.10  # a sample is contended when other processes used more than this share of the machine


def evaluate_targets(
    models: dict[str, dict], reference: dict, rounds: dict | None = None, targets: Sequence[Target] = TARGETS
) -> list[dict]:
    """Check the targets whose models (and baselines) were measured; the others are left out.

    Args:
        models: ``{name: row}`` as in the result document.
        reference: The document's ``reference`` (``onednn_gflops``).
        rounds: The document's per-round values; when given, ``measured`` is the median of the per-round
            ratios (both models measured in the same round, so drift between rounds cancels) and ``low`` /
            ``high`` their extremes; else ``measured`` is the ratio of the rows' medians and the range None.
        targets: What to check; default the issue's :data:`TARGETS`.

    Returns:
        One dict per checked target: ``label``, ``model``, ``metric``, ``baseline``, ``minimum``,
        ``measured``, ``low``, ``high``, ``passed``.
    """
    rounds = rounds or {}
    out = []
    for t in targets:
        value = (models.get(t.model) or {}).get(t.metric)
        if value is None:
            continue
        if t.baseline is None:
            measured = value
            per_round = _ratios(rounds.get(t.model, {}).get('gflops'), rounds.get(REFERENCE, {}).get('onednn_gflops'))
            per_round = [100 * r for r in per_round]
        else:
            base = (models.get(t.baseline) or {}).get(t.metric)
            if not base:
                continue
            measured = value / base
            per_round = _ratios(rounds.get(t.model, {}).get(t.metric), rounds.get(t.baseline, {}).get(t.metric))
        if per_round:
            measured = statistics.median(per_round)
        out.append(
            {
                'label': t.label,
                'model': t.model,
                'metric': t.metric,
                'baseline': t.baseline,
                'minimum': t.minimum,
                'measured': round(measured, 3),
                'low': round(min(per_round), 3) if per_round else None,
                'high': round(max(per_round), 3) if per_round else None,
                'passed': measured >= t.minimum,
            }
        )
    return out


def _ratios(num: Sequence[float | None] | None, den: Sequence[float | None] | None) -> list[float]:
    return [a / b for a, b in zip(num or [], den or [], strict=False) if a is not None and b]


def _measured_text(t: dict) -> str:
    unit = '%' if t['baseline'] is None else 'x'
    text = f'{t["measured"]:.3g}{unit}' if unit == 'x' else f'{t["measured"]:.1f}%'
    if t['low'] is not None and t['low'] != t['high']:
        text += f' [{t["low"]:.3g}-{t["high"]:.3g}]' if unit == 'x' else f' [{t["low"]:.1f}-{t["high"]:.1f}]'
    return text


def target_lines(targets: Sequence[dict]) -> list[str]:
    """One line per checked target, e.g. ``PASS convformer_tiny img/s >= 1x convnext_nano: 1.04x [1.01-1.06]``."""
    return [f'{"PASS" if t["passed"] else "FAIL"} {t["label"]}: {_measured_text(t)}' for t in targets]


# ---------------------------------------------------------------------------------------------------------------------
# Samples -> rows


def _stats(values: Sequence[float]) -> tuple[float, float, float] | tuple[None, None, None]:
    return (statistics.median(values), min(values), max(values)) if values else (None, None, None)


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _round_rate(value: float | None) -> float | None:
    """One decimal, or 3 significant digits below 1: a slow machine never rounds a tiny model's rate to 0."""
    if value is None:
        return None
    return round(value, 1) if abs(value) >= 1 else float(f'{value:.3g}')


def _rates(samples: dict | None, batch: int) -> list[float]:
    """Items per second of each timed call in ``samples`` (``{'t': [seconds, ...]}``)."""
    return [batch / t for t in (samples or {}).get('t', []) if t > 0]


def summarise(raw: dict[str, list[dict]], settings: dict, meta: dict, labels: dict[str, dict] | None = None) -> dict:
    """The result document from the workers' samples: rows of scalars, per-round values, reference rates.

    Args:
        raw: ``{model: [worker result, ...]}``, the reference task under :data:`REFERENCE`.
        settings: The run's ``BenchConfig`` as a dict.
        meta: Machine and run description; device name and worker environment are filled in from ``raw``.
        labels: Per model, extra row fields set first (``size``, ``ours``).

    A row holds ``params_m``, ``gmacs`` (as built, attention included), ``attention_gmacs``,
    ``infer_img_s`` (median over every timed batch of the faster layout) with ``_min`` / ``_max``,
    ``infer_layout``, ``infer_img_s_nchw`` / ``_channels_last``, ``channels_last_speedup`` (median of
    per-round paired ratios), ``latency_ms`` / ``_min`` (faster layout), ``train_img_s`` with ``_min`` /
    ``_max``, ``gflops`` (2 x MACs of the graph that ran x img/s), ``pct_onednn`` / ``pct_mm`` (of this
    run's reference rates), ``compiled_img_s``, ``compile_speedup`` (over eager in the same workers),
    ``compile_s``, ``peak_mem_infer_gb`` / ``peak_mem_train_gb``, ``reparameterized``, ``rounds_measured``,
    ``contended_samples`` (other processes used over 10% of the machine) and ``error``.
    """
    ref_results = [r for r in raw.get(REFERENCE, []) if r.get('reference')]
    reference = _summarise_reference(ref_results, settings)
    rows, per_round = {}, {}
    for name, results in raw.items():
        if name != REFERENCE:
            rows[name], per_round[name] = _summarise_model(results, settings, reference, (labels or {}).get(name))
    per_round[REFERENCE] = {'onednn_gflops': _by_round(ref_results, settings['rounds'], lambda r: _ref_rate(r, 'conv'))}
    meta = dict(meta)
    device_names = [r['device_name'] for rs in raw.values() for r in rs if r.get('device_name')]
    if device_names:
        meta['device'] = device_names[0]
    envs = [r['env'] for rs in raw.values() for r in rs if r.get('env')]
    meta['worker_env'] = envs[0] if envs else None
    contended = sum(row['contended_samples'] for row in rows.values())
    meta['run'] = dict(meta.get('run') or {}, contended_samples=contended)
    return {'schema': SCHEMA, 'meta': meta, 'reference': reference, 'models': rows, 'rounds': per_round, 'raw': raw}


def _ref_rate(result: dict, kind: str) -> float | None:
    sample = result['reference'].get(kind) or {}
    return _median([sample['flop'] / t / 1e9 for t in sample.get('t', []) if t > 0])


def _summarise_reference(results: list[dict], settings: dict) -> dict:
    out: dict = {
        'onednn_shape': f'{settings["reference_batch"]}x1024x28x28 -> 1024, 1x1 conv, channels_last',
        'mm_shape': f'{settings["reference_mm_size"]}^3 torch.mm',
    }
    for kind, key in (('conv', 'onednn_gflops'), ('mm', 'mm_gflops')):
        samples = [r['reference'][kind] for r in results if r['reference'].get(kind)]
        med, lo, hi = _stats([s['flop'] / t / 1e9 for s in samples for t in s['t'] if t > 0])
        out.update({key: _round(med, 1), f'{key}_min': _round(lo, 1), f'{key}_max': _round(hi, 1)})
    return out


def _peak(results: list[dict], key: str) -> float | None:
    return max((r[key] for r in results if r.get(key)), default=None)


def _by_round(results: list[dict], rounds: int, value) -> list[float | None]:
    out: list[float | None] = [None] * rounds
    for r in results:
        if 0 <= r.get('round', -1) < rounds:
            out[r['round']] = _round(value(r))
    return out


def _summarise_model(results: list[dict], settings: dict, reference: dict, labels: dict | None) -> tuple[dict, dict]:
    info = next((r['info'] for r in results if r.get('info')), {})
    b, bt = settings['batch_size'], settings['train_batch_size']
    infer = [r.get('infer') or {} for r in results]
    rates = {lay: [x for part in infer for x in _rates(part.get(lay), b)] for lay in settings['layouts']}
    medians = {lay: statistics.median(v) for lay, v in rates.items() if v}
    best = max(medians, key=medians.get) if medians else None
    img_s, lo, hi = _stats(rates[best]) if best else (None, None, None)
    paired = [
        _median(_rates(part['channels_last'], b)) / _median(_rates(part['nchw'], b))
        for part in infer
        if all(_rates(part.get(lay), b) for lay in ('nchw', 'channels_last'))
    ]
    latency = [t * 1e3 for r in results for t in (r.get('latency') or {}).get('t', [])]
    train, train_lo, train_hi = _stats([x for r in results for x in _rates(r.get('train'), bt)])
    compiled = [x for r in results for x in _rates(r.get('compile'), b)]
    eager_same = [x for r in results if _rates(r.get('compile'), b) for x in _rates(r['infer'].get(best), b)]
    compile_s = [r['compile']['compile_s'] for r in results if (r.get('compile') or {}).get('compile_s')]
    compile_errors = [r['compile']['error'] for r in results if (r.get('compile') or {}).get('error')]
    gmacs_run = info.get('gmacs_run', info.get('gmacs'))
    gflops = 2 * gmacs_run * img_s if gmacs_run and img_s else None
    onednn, mm = reference.get('onednn_gflops'), reference.get('mm_gflops')
    parts = [*(p for part in infer for p in part.values()), *(r.get('train') or {} for r in results)]
    busy = [x for p in parts for x in p.get('busy', []) if x is not None]
    errors = [r['error'] for r in results if r.get('error')]
    fallbacks = [r['train_fallback'] for r in results if r.get('train_fallback')]
    row = dict(labels or {})
    row.update(
        params_m=_round(info['params'] / 1e6) if info.get('params') else None,
        gmacs=_round(info.get('gmacs'), 4),
        attention_gmacs=_round(info.get('attention_gmacs'), 4),
        infer_img_s=_round(img_s, 2),
        infer_img_s_min=_round(lo, 2),
        infer_img_s_max=_round(hi, 2),
        infer_layout=best,
        infer_img_s_nchw=_round(medians.get('nchw'), 2),
        infer_img_s_channels_last=_round(medians.get('channels_last'), 2),
        channels_last_speedup=_round(_median(paired)),
        latency_ms=_round(_median(latency), 2),
        latency_ms_min=_round(min(latency), 2) if latency else None,
        train_img_s=_round(train, 2),
        train_img_s_min=_round(train_lo, 2),
        train_img_s_max=_round(train_hi, 2),
        train_layout=next((r['train']['layout'] for r in results if (r.get('train') or {}).get('layout')), None),
        train_fallback=fallbacks[0] if fallbacks else None,
        gflops=_round_rate(gflops),
        pct_onednn=_round_rate(100 * gflops / onednn) if gflops and onednn else None,
        pct_mm=_round_rate(100 * gflops / mm) if gflops and mm else None,
        compiled_img_s=_round(_median(compiled), 2),
        compile_speedup=_round(_median(compiled) / _median(eager_same)) if compiled and eager_same else None,
        compile_s=_round(_median(compile_s), 1),
        compile_error=compile_errors[0] if compile_errors else None,
        peak_mem_infer_gb=_round(_peak(results, 'peak_mem_infer_gb')),
        peak_mem_train_gb=_round(_peak(results, 'peak_mem_train_gb')),
        reparameterized=info.get('reparameterized'),
        rounds_measured=sum(1 for part in infer if part),
        contended_samples=sum(x > CONTENDED for x in busy),
        error=errors[0] if errors else None,
    )  # fmt: skip
    modes = _summarise_modes(results, b)
    if modes:
        row['modes'] = modes
    n = settings['rounds']
    rounds = {
        'infer_img_s': _by_round(results, n, lambda r: _median(_rates((r.get('infer') or {}).get(best), b))),
        'train_img_s': _by_round(results, n, lambda r: _median(_rates(r.get('train'), bt))),
    }
    rounds['gflops'] = [
        _round(2 * gmacs_run * v) if v is not None and gmacs_run else None for v in rounds['infer_img_s']
    ]
    return row, rounds


def _summarise_modes(results: list[dict], batch: int) -> dict:
    """Per deployment mode: img/s (median over every timed batch; ``img_s_min``/``img_s_max``: the range of the
    per-round medians), ``vs_eager`` (median of per-worker paired ratios against eager timed in alternation with it),
    build seconds, the largest |logit - eager| and file size, or the error that kept it from building."""
    parts = [r['modes'] for r in results if r.get('modes')]
    out = {}
    for mode in dict.fromkeys(m for part in parts for m in part):
        rates = [x for part in parts for x in _rates(part.get(mode), batch)]
        paired = [
            _median(_rates(part[mode], batch)) / _median(_rates(part['eager'], batch))
            for part in parts
            if _rates(part.get(mode), batch) and _rates(part.get('eager'), batch)
        ]
        entries = [part[mode] for part in parts if mode in part]
        errors = [e['error'] for e in entries if e.get('error')]
        diffs = [e['max_abs_diff'] for e in entries if e.get('max_abs_diff') is not None]
        per_round = [_median(_rates(part.get(mode), batch)) for part in parts if _rates(part.get(mode), batch)]
        out[mode] = {
            'img_s': _round(_median(rates), 2),
            # the range of the per-worker (per-round) medians: what the front's dominance rule compares
            'img_s_min': _round(min(per_round), 2) if per_round else None,
            'img_s_max': _round(max(per_round), 2) if per_round else None,
            'vs_eager': _round(_median(paired)),
            'build_s': _round(_median([e['build_s'] for e in entries if e.get('build_s') is not None]), 1),
            'max_abs_diff': float(f'{max(diffs):.3g}') if diffs else None,
            'file_mb': _round(_median([e['file_mb'] for e in entries if e.get('file_mb')]), 2),
            'error': errors[0] if errors and not rates else None,
        }
    return out


def render_modes_markdown(doc: dict) -> str | None:
    """The deployment-mode table: img/s per mode (x eager, paired), build time and parity, one row per model."""
    rows = [(name, r) for name, r in ordered(doc['models']) if r.get('modes')]
    if not rows:
        return None
    modes = list(dict.fromkeys(m for _, r in rows for m in r['modes']))
    header = ['model', *[f'{m} img/s' for m in modes], 'build s (' + ', '.join(m for m in modes if m != 'eager') + ')']
    header.append('max abs diff vs eager')
    table = []
    for name, r in rows:
        cells = [f'**{name}**' if r.get('ours') else name]
        for m in modes:
            e = r['modes'].get(m) or {}
            if e.get('error'):
                cells.append('failed')
            elif m == 'eager':
                cells.append(_fmt_fixed(e.get('img_s')))
            else:
                cells.append(f'{_fmt_fixed(e.get("img_s"))} ({_fmt_fixed(e.get("vs_eager"), 2)}x)')
        others = [r['modes'].get(m) or {} for m in modes if m != 'eager']
        cells.append(' / '.join(_fmt_fixed(e.get('build_s')) for e in others))
        cells.append(' / '.join(_fmt_sig(e.get('max_abs_diff')) for e in others))
        table.append(cells)
    failed = [(n, m, e['error']) for n, r in rows for m, e in r['modes'].items() if e.get('error')]
    text = '\n'.join(markdown_table(header, table))
    text += (
        '\n\nEach mode is built from the folded eager model in the same worker, checked against it on the timed batch '
        '(largest |logit difference|), then timed in alternation with it: the ratio is the median of per-round paired '
        'ratios. eager: folded (ours with GELU and residual adds fused into the convs); compiled: torch.compile '
        '(inductor) with freezing; onnxruntime: CPU execution provider, all graph optimizations, threads as torch; '
        'int8: ONNX Runtime static QDQ, int8-pt2e: PyTorch PT2E with the x86 inductor quantizer, compiled with '
        'freezing (both: int8 weights per channel, uint8 activations), calibrated on random batches for speed '
        '(accuracy: `hybrid-zoo export --int8`).'
    )
    versions = {k: v for k, v in ((doc['meta'].get('software') or {}).get('runtimes') or {}).items() if v}
    if versions:
        text += ' Runtimes: ' + ', '.join(f'{k} {v}' for k, v in versions.items()) + '.'
    if failed:
        text += '\n\nFailed to build: ' + '; '.join(f'{n} {m}: {err}' for n, m, err in failed) + '.'
    return text


def render_modes_plot(doc: dict) -> bytes | None:
    """Grouped bars: images/s per deployment mode, per model."""
    rows = [(name, r) for name, r in ordered(doc['models']) if r.get('modes')]
    if not rows:
        return None
    modes = list(dict.fromkeys(m for _, r in rows for m in r['modes']))
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) * len(modes)), 4.5), layout='constrained')
    ax = fig.subplots()
    width = 0.8 / len(modes)
    for i, mode in enumerate(modes):
        values = [(r['modes'].get(mode) or {}).get('img_s') or 0 for _, r in rows]
        ax.bar([j + i * width for j in range(len(rows))], values, width, label=mode)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [n for n, _ in rows], rotation=30, ha='right')
    ax.set_ylabel(f'images/s, batch {doc["meta"].get("settings", {}).get("batch_size", "")}')
    ax.set_title('CPU inference by deployment mode')
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=110)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------------
# Top-1 from a results CSV


def read_top1(path: str | os.PathLike) -> dict[str, float]:
    """``{model: top1}`` from a CSV with columns ``model`` and ``top1`` (timm's ``results-imagenet.csv`` works).

    A name with a pretrained tag (``coatnet_0_rw_224.sw_in1k``) also answers for its architecture, with the
    best top-1 among its tags; an exact name always wins.
    """
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if 'model' not in columns or 'top1' not in columns:
            raise ValueError(f'{path}: expected columns model,top1; found {reader.fieldnames}')
        rows = [(r[columns['model']].strip(), float(r[columns['top1']])) for r in reader if r[columns['top1']]]
    exact = dict(rows)
    best: dict[str, float] = {}
    for name, top1 in rows:
        arch = name.split('.')[0]
        best[arch] = max(top1, best.get(arch, top1))
    return {**best, **exact}


def attach_top1(doc: dict, top1: dict[str, float], source: str) -> None:
    for name, row in doc['models'].items():
        row['top1'] = top1.get(name, top1.get(name.split('.')[0]))
    doc['meta']['top1_source'] = source


# ---------------------------------------------------------------------------------------------------------------------
# Markdown, CSV, plot


def _fmt_fixed(value, digits: int = 1) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _fmt_sig(value) -> str:
    return '-' if value is None else f'{value:.1f}' if value >= 10 else f'{value:.2f}'


def ordered(models: dict[str, dict]) -> list[tuple[str, dict]]:
    """Rows by size class (tiny, small, base, others), fastest first within a class."""

    def key(item: tuple[str, dict]):
        name, row = item
        size = SIZES.index(row['size']) if row.get('size') in SIZES else len(SIZES)
        return size, -(row.get('infer_img_s') or 0.0), name

    return sorted(models.items(), key=key)


def _plural(n, word: str) -> str:
    return f'{n} {word}' if n == 1 else f'{n} {word}s'


def settings_line(meta: dict, reference: dict | None = None) -> str:
    s = meta.get('settings', {})
    parts = [
        f'{meta.get("device")}, {meta.get("threads")} threads, torch {meta.get("torch")}, timm {meta.get("timm")}, '
        f'{meta.get("date")}',
        f'{meta.get("dtype")}, {s.get("img_size")} px, {_plural(s.get("rounds"), "round")} interleaved across models',
        f'allocator: {meta.get("allocator")}',
        'reparameterized where supported' if s.get('reparam') else 'not reparameterized',
    ]
    if reference and reference.get('onednn_gflops'):
        parts.append(
            f'reference: oneDNN 1x1 conv {_fmt_fixed(reference["onednn_gflops"], 0)} GFLOP/s '
            f'[{_fmt_fixed(reference["onednn_gflops_min"], 0)}-{_fmt_fixed(reference["onednn_gflops_max"], 0)}], '
            f'torch.mm {_fmt_fixed(reference["mm_gflops"], 0)} GFLOP/s'
        )
    return '; '.join(parts) + '.'


def render_markdown(doc: dict) -> str:
    """The comparison table, the targets and any errors, as markdown."""
    meta, ref, s = doc['meta'], doc.get('reference') or {}, doc['meta'].get('settings', {})
    rows = ordered(doc['models'])
    show_compile = any(r.get('compiled_img_s') for _, r in rows)
    show_top1 = any(r.get('top1') is not None for _, r in rows)
    mem = 'GPU mem GB' if s.get('device', 'cpu') != 'cpu' else 'peak RSS GB'
    header = [
        'model', 'size', 'params M', 'GMACs (attn)', f'img/s b{s.get("batch_size")} med [min-max]', 'layout',
        'CL/NCHW', f'ms b{s.get("latency_batch_size")} med [min]', f'train img/s b{s.get("train_batch_size")}',
        f'{mem} infer / train', 'GFLOP/s', '% oneDNN',
    ]  # fmt: skip
    header += ['compile x'] * show_compile + ['top-1'] * show_top1
    table = []
    for name, r in rows:
        cells = [
            f'**{name}**' if r.get('ours') else name,
            r.get('size') or '-',
            _fmt_fixed(r.get('params_m')),
            f'{_fmt_fixed(r.get("gmacs"), 2)} ({_fmt_fixed(r.get("attention_gmacs"), 2)})',
            f'{_fmt_sig(r.get("infer_img_s"))} [{_fmt_sig(r.get("infer_img_s_min"))}-{_fmt_sig(r.get("infer_img_s_max"))}]',
            {'channels_last': 'CL', 'nchw': 'NCHW'}.get(r.get('infer_layout'), '-'),
            _fmt_fixed(r.get('channels_last_speedup'), 2),
            f'{_fmt_fixed(r.get("latency_ms"))} [{_fmt_fixed(r.get("latency_ms_min"))}]',
            f'{_fmt_sig(r.get("train_img_s"))} [{_fmt_sig(r.get("train_img_s_min"))}-{_fmt_sig(r.get("train_img_s_max"))}]'
            + (' (NCHW)' if r.get('train_fallback') else ''),
            f'{_fmt_fixed(r.get("peak_mem_infer_gb"), 2)} / {_fmt_fixed(r.get("peak_mem_train_gb"), 2)}',
            _fmt_fixed(r.get('gflops'), 0),
            _fmt_fixed(r.get('pct_onednn'), 0),
        ]
        cells += [_fmt_fixed(r.get('compile_speedup'), 2)] * show_compile + [_fmt_fixed(r.get('top1'), 2)] * show_top1
        table.append(cells)
    lines = [settings_line(meta, ref), '', *markdown_table(header, table)]
    lines += [
        '',
        f'img/s: median over every timed batch of {_plural(s.get("rounds"), "round")} in the faster layout, '
        '[min-max]; CL/NCHW: median of per-round paired ratios; train: forward + backward + SGD step in '
        f'{s.get("train_layout")}'
        + (
            ' (NCHW where marked, after a native crash in channels_last)'
            if any(r.get('train_fallback') for _, r in rows)
            else ''
        )
        + '; GFLOP/s = 2 x GMACs of the graph that ran x img/s; % oneDNN: of the reference '
        f'1x1-conv rate of this run; memory: {meta.get("memory")}.',
    ]
    if doc.get('targets'):
        as_specified = (s.get('batch_size'), s.get('img_size'), s.get('amp', 'none')) == (32, 224, 'none')
        note = (
            [] if as_specified else ['Targets are set for fp32, batch 32 at 224 px; this run used other settings.', '']
        )
        rows = [[t['label'], _measured_text(t), 'pass' if t['passed'] else '**FAIL**'] for t in doc['targets']]
        lines += ['', *note, *markdown_table(['target', 'measured [per-round range]', 'result'], rows)]
    modes = render_modes_markdown(doc)
    if modes:
        lines += ['', 'Deployment modes:', '', modes]
    return '\n'.join(lines + problem_lines(doc)) + '\n'


def render_modes_only(doc: dict) -> str | None:
    """The deployment-modes part of a run's markdown (its settings, the modes table, its problems), without the eager
    table and the target checks that the headline run owns; None for a run without modes."""
    modes = render_modes_markdown(doc)
    if not modes:
        return None
    return '\n'.join([settings_line(doc['meta'], doc.get('reference') or {}), '', modes, *problem_lines(doc)])


def problem_lines(doc: dict) -> list[str]:
    """Markdown lines naming every model of the run that failed, was skipped or fell back ([] when none did)."""
    models, meta = doc['models'], doc['meta']
    problems = [(n, r['error']) for n, r in models.items() if r.get('error')]
    problems += [(n, f'compile: {r["compile_error"]}') for n, r in models.items() if r.get('compile_error')]
    problems += [(item, 'skipped') for item in meta.get('run', {}).get('skipped', [])]
    problems += [(n, r['train_fallback']) for n, r in models.items() if r.get('train_fallback')]
    return ['', 'Problems:', *(f'- {name}: {text}' for name, text in problems)] if problems else []


def render_csv(doc: dict) -> str:
    rows = ordered(doc['models'])
    columns = list(dict.fromkeys(k for _, r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=['model', *columns], lineterminator='\n')
    writer.writeheader()
    for name, r in rows:
        writer.writerow({'model': name, **r})
    return buf.getvalue()


def render_plot(doc: dict) -> bytes:
    """PNG: images/s against GMACs (with iso-efficiency curves of the reference rate), and against top-1."""

    meta, ref, s = doc['meta'], doc.get('reference') or {}, doc['meta'].get('settings', {})
    rows = [(n, r) for n, r in ordered(doc['models']) if r.get('infer_img_s') and r.get('gmacs')]
    with_top1 = [(n, r) for n, r in rows if r.get('top1') is not None]
    fig = Figure(figsize=(14 if with_top1 else 8, 6), layout='constrained')
    axes = list(np.atleast_1d(fig.subplots(1, 2 if with_top1 else 1)))
    style = {
        True: dict(color='tab:red', marker='o', s=46, label='hybrid_zoo'),
        False: dict(color='tab:blue', marker='s', s=30, label='timm peers'),
    }
    panels = [(axes[0], rows, lambda r: r['gmacs'], lambda r: r['infer_img_s'])]
    if with_top1:
        panels.append((axes[1], with_top1, lambda r: r['infer_img_s'], lambda r: r['top1']))
    for ax, items, fx, fy in panels:
        for ours in (False, True):
            pts = [(fx(r), fy(r)) for _, r in items if bool(r.get('ours')) == ours]
            if pts:
                ax.scatter(*zip(*pts, strict=True), zorder=3, **style[ours])
        for name, r in items:
            ax.annotate(name, (fx(r), fy(r)), xytext=(4, 3), textcoords='offset points', fontsize=7,
                        fontweight='bold' if r.get('ours') else 'normal')  # fmt: skip
        ax.grid(alpha=0.3, which='both')
    ax = axes[0]
    if rows and ref.get('onednn_gflops'):
        xs = np.linspace(min(r['gmacs'] for _, r in rows) * 0.8, max(r['gmacs'] for _, r in rows) * 1.15, 100)
        for frac, ls in ((1.0, '--'), (0.5, ':')):
            ax.plot(xs, frac * ref['onednn_gflops'] / (2 * xs), ls, color='grey', lw=0.9,
                    label=f'{frac:.0%} of the oneDNN 1x1 rate')  # fmt: skip
    ax.set_yscale('log')
    if rows:  # the iso-efficiency curves must not stretch the axis beyond the models
        ys = [r['infer_img_s'] for _, r in rows]
        ax.set_ylim(min(ys) / 1.4, max(ys) * 1.4)
    ax.set_xlabel('GMACs per image (attention included)')
    ax.set_ylabel(f'images/s (batch {s.get("batch_size")}, faster layout)')
    if rows:
        ax.legend(fontsize=8)
    if with_top1:
        axes[1].set_xscale('log')
        axes[1].set_xlabel(f'images/s (batch {s.get("batch_size")})')
        axes[1].set_ylabel(f'top-1 % ({meta.get("top1_source", "results CSV")})')
        axes[1].legend(fontsize=8)
    fig.suptitle(
        f'{meta.get("device")}, {meta.get("threads")} threads, {meta.get("dtype")}, {s.get("img_size")} px, '
        f'torch {meta.get("torch")}, {meta.get("date")}',
        fontsize=10,
    )
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=130)
    return buf.getvalue()


RUNTIMES = ('onnxruntime', 'onnx', 'onnxscript', 'torchao', 'torchvision')


def runtime_versions() -> dict[str, str | None]:
    """Installed versions of the runtimes the deployment modes use (None: not installed), read without importing."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def refresh(doc: dict) -> dict:
    """A result document re-summarised from its raw samples and its targets re-checked (``--report-only``).

    The rows and targets follow this version's rules; the samples, settings and run record stay as measured.
    """
    labels = {
        n: {k: r[k] for k in ('size', 'ours', 'architecture_version') if k in r} for n, r in doc['models'].items()
    }
    meta = doc['meta']
    fresh = summarise(doc['raw'], meta['settings'], meta, labels)
    fresh['meta']['run'] = dict(meta.get('run') or {}, contended_samples=fresh['meta']['run']['contended_samples'])
    on_cpu = meta['settings'].get('device', 'cpu') == 'cpu'
    fresh['targets'] = evaluate_targets(fresh['models'], fresh['reference'], fresh['rounds']) if on_cpu else []
    for name, row in doc['models'].items():  # a top-1 column attached earlier
        if 'top1' in row:
            fresh['models'][name]['top1'] = row['top1']
    for key in set(doc) - set(fresh):
        fresh[key] = doc[key]
    software = fresh['meta'].setdefault('software', {})
    if 'runtimes' not in software:  # a file from before runtimes were recorded: this environment's, marked as such
        software['runtimes'] = runtime_versions()
        software['runtimes_read'] = 'at --report-only, not at measurement'
    return fresh


def write_outputs(
    doc: dict, out_dir: str | os.PathLike, name: str = 'bench-cpu', *, top1_csv: str | os.PathLike | None = None
) -> list[Path]:
    """Write ``<name>.json``, ``.csv``, ``.md`` and ``.png`` into ``out_dir``, each atomically.

    With ``top1_csv`` the rows get a ``top1`` column and the plot a second panel.
    """

    if top1_csv is not None:
        attach_top1(doc, read_top1(top1_csv), Path(top1_csv).name)
    out = Path(out_dir)
    return [
        write_json_atomic(out / f'{name}.json', doc),
        write_atomic(out / f'{name}.csv', render_csv(doc)),
        write_atomic(out / f'{name}.md', render_markdown(doc)),
        write_atomic(out / f'{name}.png', render_plot(doc)),
        *([write_atomic(out / f'{name}-modes.png', plot)] if (plot := render_modes_plot(doc)) else []),
    ]
