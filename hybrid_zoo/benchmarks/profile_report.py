"""The verdicts and the report of ``hybrid-zoo profile``: what caps each target, ``profile-cpu.md`` and ``.png``."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from hybrid_zoo.atomic import write_atomic, write_figure_atomic, write_json_atomic
from hybrid_zoo.benchmarks.peers import TARGETS
from hybrid_zoo.benchmarks.profile_ops import CATEGORIES
from hybrid_zoo.benchmarks.profile_training import PHASES
from hybrid_zoo.benchmarks.tables import markdown_table

_log = logging.getLogger(__name__)


def target_ceilings(models: Sequence[dict], training: Sequence[dict] = (), bench: dict | None = None) -> list[dict]:
    """The performance targets (``peers.TARGETS``), as measured and with our model at its ceilings.

    Inference targets use the inference profiles (``models``), training targets the training ones. The
    measured value is the benchmark's (``bench``: a ``bench-cpu.json`` document, whose interleaved rounds
    are steadier than this profile's single pass) where it has the target, else this profile's own. At a
    ceiling our model runs ``ceiling % / achieved %`` times faster (that headroom comes from the profile);
    the peer stays as measured.
    """

    by_metric = {
        'infer_img_s': {m['model']: m for m in models},
        'pct_onednn': {m['model']: m for m in models},
        'train_img_s': {m['model']: m for m in training},
    }
    benched = {t['label']: t for t in (bench or {}).get('targets', [])}
    out = []
    for t in TARGETS:
        by_name = by_metric.get(t.metric, {})
        ours = by_name.get(t.model)
        if ours is None:
            continue
        met = None  # the benchmark's own verdict where it has one: it compares unrounded ratios
        if t.label in benched:
            measured, source, met = benched[t.label]['measured'], 'bench', benched[t.label].get('passed')
        elif t.metric == 'pct_onednn':
            measured, source = ours['pct_of_reference'], 'profile'
        elif t.baseline in by_name:
            measured, source = ours['img_per_s'] / by_name[t.baseline]['img_per_s'], 'profile'
        else:
            continue
        at_ceiling = _at_ceiling(measured, ours, ours['ceiling_pct_of_reference'])
        at_shape = _at_ceiling(measured, ours, ours.get('shape_ceiling_pct'))
        out.append(
            {
                'target': t.label,
                'metric': t.metric,
                'minimum': t.minimum,
                'measured': round(measured, 3),
                'measured_by': source,
                'at_ceiling': at_ceiling,
                'at_shape_ceiling': at_shape,
                'reachable_by_gemm_alone': at_ceiling >= t.minimum,
                'verdict': _verdict(t.minimum, measured, at_ceiling, at_shape, met),
            }
        )
    return out


def _at_ceiling(measured: float, ours: dict, ceiling_pct: float | None) -> float | None:
    """A target's value (a ratio, or a % of the rate) with our model at ``ceiling_pct`` of the rate."""
    if ceiling_pct is None:
        return None
    return round(measured * ceiling_pct / ours['pct_of_reference'], 2)


VERDICTS = {
    'met': 'met here',
    'non-GEMM': 'no: the non-GEMM work caps it even with every GEMM at the 1x1 rate',
    'shapes': 'no: only with GEMMs faster than oneDNN runs these shapes alone',
    'open': "yes: within reach at the GEMM shapes' own rates",
}


def _verdict(
    minimum: float, measured: float, at_ceiling: float, at_shape: float | None, met: bool | None = None
) -> str:
    """Why a target is (not) met: ``met``, ``non-GEMM``, ``shapes`` or ``open`` (see :data:`VERDICTS`); ``met``
    overrides ``measured >= minimum`` (a benchmark's pass on the unrounded ratio)."""
    if (measured >= minimum) if met is None else met:
        return 'met'
    if at_ceiling < minimum:
        return 'non-GEMM'
    if at_shape is not None and at_shape < minimum:
        return 'shapes'
    return 'open'


def _share_cells(entry: dict, categories: Sequence[str]) -> list[str]:
    cells = []
    for c in categories:
        e = entry['categories'][c]
        cells.append(f'{e["share_pct"]:.1f}' + (f' ({e["gflop_s"]:.0f})' if e['gflop_s'] else ''))
    return cells


_MODEL_COLUMNS = [
    'model',
    'img/s',
    'GFLOP/s',
    '% of 1x1 rate',
    'ceiling %',
    'shape ceiling %',
    'GEMM s in model / alone',
]


def _model_cells(p: dict) -> list[str]:
    shape = '-' if p.get('shape_ceiling_pct') is None else f'{p["shape_ceiling_pct"]:.0f}'
    over = '-' if p.get('gemm_over_isolated') is None else f'{p["gemm_over_isolated"]:.2f}'
    rates = [f'{p["img_per_s"]:.1f}', f'{p["gflop_s"]:.0f}', f'{p["pct_of_reference"]:.0f}']
    return [f'`{p["model"]}`', *rates, f'{p["ceiling_pct_of_reference"]:.0f}', shape, over]


def render(data: dict, out: Path) -> None:
    """``profile-cpu.md`` (inference and training tables, targets) and ``profile-cpu.png`` (time shares)."""

    matplotlib.use('Agg')

    ref = data['reference_gflop_s']
    shares = [f'{c} % (GFLOP/s)' for c in CATEGORIES]
    rows = [_model_cells(p) + _share_cells(p, CATEGORIES) for p in data['models']]
    lines = ['Inference:', '', *markdown_table(_MODEL_COLUMNS + shares, rows)]
    training = data.get('training') or []
    if training:
        rows = [
            [*_model_cells(p), ' / '.join(f'{p["phases"][ph]["share_pct"]:.0f}' for ph in PHASES)]
            + _share_cells(p, CATEGORIES)
            for p in training
        ]
        header = _MODEL_COLUMNS + ['forward / backward / optimizer %'] + shares
        lines += ['', f'Training step (batch {data["train_batch"]}):', '', *markdown_table(header, rows)]
    if data.get('targets'):
        header = ['target', 'needed', 'measured', 'at the ceiling (1x1 rate)', 'at the shape ceiling', 'reachable?']
        rows = [
            [t['target'], f'{t["minimum"]:g}', f'{t["measured"]:.2f}', f'{t["at_ceiling"]:.2f}']
            + ['-' if t.get('at_shape_ceiling') is None else f'{t["at_shape_ceiling"]:.2f}', VERDICTS[t['verdict']]]
            for t in data['targets']
        ]
        lines += ['', *markdown_table(header, rows)]
    m = data['meta']
    lines += [
        '',
        f'Inference: batch {data["batch"]} at {data["img_size"]} px, fp32, channels_last, reparameterized; share of '
        'the forward time per kind of operation (leaf-module and SDPA timers), with its achieved GFLOP/s. '
        + (
            f'Training: forward + backward + SGD momentum step at batch {data["train_batch"]}, channels_last, not '
            'reparameterized; median step time, split by the median `torch.profiler` trace of the top-level aten '
            'ops (forward, backward under the autograd engine, optimizer): convolutions, GEMMs, attention, '
            'activations and norms keep their traced time and "rest" (small ops, which carry the profiler\'s '
            'overhead) gets what is left of the step; GEMMs are 1x1 convs and linear layers, forward and both '
            'gradients. '
            if training
            else ''
        )
        + '1x1 rate: channels_last 1024->1024 1x1 conv on 28x28 in the same process, '
        + (
            "measured again right before each model's inference and training profile, which is set against it: "
            f'median {ref:.0f} GFLOP/s [{data["reference_gflop_s_range"][0]:.0f}-'
            f'{data["reference_gflop_s_range"][1]:.0f}]. '
            if data.get('reference_gflop_s_range')
            else f'{ref:.0f} GFLOP/s. '
        )
        + '"Ceiling": the share of that rate the model would reach if its GEMMs ran exactly at it and everything else took the '
        'time measured; "shape ceiling": the same with each GEMM at the rate its own shape reaches run alone '
        '(every distinct shape of the model timed in isolation: forward, or forward and both gradients); '
        '"measured": the benchmark\'s value (`bench-cpu.json`, interleaved rounds) where it has the target, else '
        'this profile\'s; "at the ceiling": that value with our model sped up by its headroom to the ceiling '
        f'(ceiling % / achieved %), the peer unchanged. Profiled {m["date"]} on {m["cpu"]} ({m["threads"]} threads, '
        f'torch {m["torch"]}), allocator trimming off. Source: `model_cards/results/{out.name}`; `hybrid-zoo profile` '
        'regenerates it.',
    ]
    write_atomic(out.with_suffix('.md'), '\n'.join(lines) + '\n')

    panels = [(f'inference (batch {data["batch"]})', data['models'], CATEGORIES)]
    if training:
        panels.append((f'training step (batch {data["train_batch"]})', training, CATEGORIES))
    rows = max(len(p[1]) for p in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 0.45 * rows + 1.8), squeeze=False)
    colours = {c: f'C{i}' for i, c in enumerate(CATEGORIES)}
    for ax, (title, entries, categories) in zip(axes[0], panels, strict=True):
        names = [p['model'] for p in entries]
        left = [0.0] * len(names)
        for c in categories:
            share = [p['categories'][c]['share_pct'] for p in entries]
            ax.barh(names, share, left=left, label=c, color=colours.get(c))
            left = [a + b for a, b in zip(left, share, strict=True)]
        ax.invert_yaxis()
        ax.set_xlabel('share of CPU time (%)')
        ax.set_title(f'Where the time goes: {title}, {data["img_size"]} px, {m["threads"]} threads', fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, ncol=len(labels), fontsize=8, loc='lower center')
    fig.tight_layout(rect=(0, 0.6 / (0.45 * rows + 1.8), 1, 1))
    write_figure_atomic(fig, out.with_suffix('.png'))
    plt.close(fig)


def rerender(path: Path, bench_path: Path) -> dict:
    """Re-check the targets of a saved profile against ``bench_path`` (if it exists) and re-render it."""
    data = json.loads(path.read_text())
    bench = json.loads(bench_path.read_text()) if bench_path.is_file() else None
    data['bench'] = str(bench_path) if bench else None
    data['targets'] = target_ceilings(data['models'], data.get('training') or [], bench)
    write_json_atomic(path, data)
    render(data, path)
    return data
