"""``hybrid-zoo profile``: where a model's CPU inference time goes, by kind of operation, and what that caps.

Each model is built as the benchmark builds it (reparameterized where supported, channels_last, eval, batch 32
at 224 px by default) and run under ``inference_mode`` with a timer on every leaf module and on
``F.scaled_dot_product_attention``. Time is filed under:

- ``gemm``: 1x1 convolutions and ``nn.Linear`` (the GEMMs), with their FLOPs from the output shapes;
- ``depthwise``: convolutions with one input channel per group;
- ``dense kxk``: other convolutions (stem, downsampling, 3x3 dense);
- ``attention``: ``F.scaled_dot_product_attention`` (FLOPs ``4 B H Lq Lk d``);
- ``activation``: GELU / ReLU / SiLU / Hardswish / Sigmoid modules;
- ``norm``: BatchNorm / LayerNorm / GroupNorm modules left after folding;
- ``rest``: everything else in the forward (residual adds, reshapes, pooling, functional activations).

With the machine's channels_last 1x1-conv rate ``R`` measured in the same process, it reports the ceiling
the non-GEMM work puts on the whole model: ``total FLOPs / (gemm FLOPs / R + non-GEMM time)``, i.e. the share
of ``R`` the model would reach if its GEMMs ran exactly at ``R`` and everything else took the time measured.
A target above that ceiling cannot be met without removing or speeding up non-GEMM work.

The process re-executes itself with glibc's allocator kept from trimming (the benchmark's setting) unless
that is already set. Writes ``profile-cpu.json`` / ``.md`` / ``.png``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .results import RESULTS_DIR, machine_meta, write_atomic, write_figure_atomic, write_json_atomic

_log = logging.getLogger(__name__)

CATEGORIES = ('gemm', 'depthwise', 'dense kxk', 'attention', 'activation', 'norm', 'rest')
# ours by size with the CoAtNet of that size and the peers the targets name
DEFAULT_MODELS = (
    'convformer_tiny_early',
    'convformer_tiny',
    'convformer_tiny_late',
    'coatnet_nano_rw_224',
    'convnext_nano',
    'convformer_small_early',
    'convformer_small',
    'convformer_small_late',
    'coatnet_0_rw_224',
    'convnext_tiny',
    'caformer_s18',
    'convformer_base_early',
    'convformer_base',
    'convformer_base_late',
    'coatnet_1_rw_224',
    'caformer_s36',
)


_ACTIVATION_NAMES = {'gelu', 'gelutanh', 'quickgelu', 'relu', 'relu6', 'silu', 'swish', 'hardswish', 'hardsigmoid'}
_ACTIVATION_NAMES |= {'sigmoid', 'mish', 'starrelu', 'hardswishme', 'swishme'}


def _category(module) -> str | None:
    from torch import nn

    activations = (nn.GELU, nn.ReLU, nn.SiLU, nn.Hardswish, nn.Sigmoid, nn.ReLU6, nn.Hardsigmoid, nn.Mish)

    if isinstance(module, nn.Conv2d):
        if module.groups == module.in_channels and module.in_channels > 1:
            return 'depthwise'
        if module.kernel_size == (1, 1) and module.groups == 1:
            return 'gemm'
        return 'dense kxk'
    if isinstance(module, nn.Linear):
        return 'gemm'
    if isinstance(module, activations) or type(module).__name__.lower() in _ACTIVATION_NAMES:  # timm's own classes
        return 'activation'
    if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or 'Norm' in type(module).__name__:
        return 'norm'
    return None


def _flop(module, out) -> float:
    """Multiply-adds x 2 of a conv or linear, from its output."""
    from torch import nn

    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return 2.0 * out.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return 2.0 * out.numel() * module.in_features
    return 0.0


class _Timers:
    """Accumulated seconds and FLOPs per category while ``active``."""

    def __init__(self) -> None:
        self.time = dict.fromkeys(CATEGORIES, 0.0)
        self.flop = dict.fromkeys(CATEGORIES, 0.0)
        self.active = False

    def attach(self, model) -> list:
        handles = []
        for m in model.modules():
            cat = None if list(m.children()) else _category(m)  # leaves only: no time counted twice
            if cat is None:
                continue
            handles.append(m.register_forward_pre_hook(self._pre))
            handles.append(m.register_forward_hook(self._post(cat)))
        return handles

    def _pre(self, module, args) -> None:
        module._hz_t0 = time.perf_counter()

    def _post(self, cat: str):
        def hook(module, args, out) -> None:
            if self.active:
                self.time[cat] += time.perf_counter() - module._hz_t0
                self.flop[cat] += _flop(module, out)

        return hook

    def sdpa(self, fn):
        def timed(q, k, v, *args, **kwargs):
            t0 = time.perf_counter()
            out = fn(q, k, v, *args, **kwargs)
            if self.active:
                self.time['attention'] += time.perf_counter() - t0
                lq, lk, d = q.shape[-2], k.shape[-2], q.shape[-1]
                self.flop['attention'] += 4.0 * q[..., 0, 0].numel() * lq * lk * d
            return out

        return timed


def reference_rate(batch: int = 32, iters: int = 8) -> float:
    """FLOP/s of a channels_last 1024->1024 1x1 conv on 28x28 (the benchmark's oneDNN reference), median."""
    import torch
    from torch import nn

    conv = nn.Conv2d(1024, 1024, 1, bias=False).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 1024, 28, 28).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode():
        for i in range(iters + 2):
            t0 = time.perf_counter()
            conv(x)
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return 2 * batch * 28 * 28 * 1024 * 1024 / statistics.median(times)


def profile_model(
    name: str,
    batch: int = 32,
    img_size: int = 224,
    iters: int = 4,
    ref: float | None = None,
    model_kwargs: dict | None = None,
) -> dict:
    """Time per category (median over ``iters`` forwards after a warm-up) for one timm model."""
    import torch
    import torch.nn.functional as F
    from timm.models import reparameterize_model

    from .evaluate import create_model
    from .flops import count_macs

    model = create_model(name, img_size=img_size, **(model_kwargs or {})).eval()
    total_flop = 2e9 * batch * count_macs(model, (3, img_size, img_size)).gmacs  # counted for one image
    try:
        model = reparameterize_model(model)
    except Exception as e:  # noqa: BLE001 - a model whose fuse hook is not timm's: profile it unfolded
        _log.warning('%s: not reparameterized (%s)', name, e)
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    timers = _Timers()
    handles = timers.attach(model)
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = timers.sdpa(original)
    runs = []
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(iters):
                timers.time, timers.flop = dict.fromkeys(CATEGORIES, 0.0), dict.fromkeys(CATEGORIES, 0.0)
                timers.active = True
                t0 = time.perf_counter()
                model(x)
                wall = time.perf_counter() - t0
                timers.active = False
                runs.append((wall, dict(timers.time), dict(timers.flop)))
    finally:
        F.scaled_dot_product_attention = original
        for h in handles:
            h.remove()
    wall, times, flops = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    times['rest'] = max(wall - sum(v for k, v in times.items() if k != 'rest'), 0.0)
    flops['rest'] = max(total_flop - sum(flops.values()), 0.0)
    ref = ref or reference_rate(batch)
    nongemm = wall - times['gemm']
    ceiling = total_flop / (flops['gemm'] / ref + nongemm) / ref
    return {
        'model': name,
        'model_kwargs': dict(model_kwargs or {}),
        'batch': batch,
        'img_size': img_size,
        'ms_per_batch': round(1e3 * wall, 1),
        'img_per_s': round(batch / wall, 2),
        'gflop_per_batch': round(total_flop / 1e9, 1),
        'gflop_s': round(total_flop / wall / 1e9, 1),
        'pct_of_reference': round(100 * total_flop / wall / ref, 1),
        'ceiling_pct_of_reference': round(100 * ceiling, 1),
        'categories': {
            c: {
                'ms': round(1e3 * times[c], 1),
                'share_pct': round(100 * times[c] / wall, 1),
                'gflop': round(flops[c] / 1e9, 4),
                'gflop_s': round(flops[c] / times[c] / 1e9, 1) if times[c] > 0 and flops[c] > 0 else None,
            }
            for c in CATEGORIES
        },
    }


def target_ceilings(models: Sequence[dict]) -> list[dict]:
    """The inference targets of the bench issue, measured here and at each model's ceiling.

    At the ceiling our model's images/s is ``ceiling x rate / FLOPs per image``; the peer stays as measured.
    A target above its ceiling ratio cannot be met by faster GEMMs alone.
    """
    from .bench_report import TARGETS

    by_name = {m['model']: m for m in models}
    out = []
    for t in TARGETS:
        ours = by_name.get(t.model)
        if ours is None or t.metric not in ('infer_img_s', 'pct_onednn'):
            continue
        ceiling_img_s = ours['img_per_s'] * ours['ceiling_pct_of_reference'] / ours['pct_of_reference']
        if t.metric == 'pct_onednn':
            measured, at_ceiling = ours['pct_of_reference'], ours['ceiling_pct_of_reference']
        elif t.baseline in by_name:
            peer = by_name[t.baseline]['img_per_s']
            measured, at_ceiling = ours['img_per_s'] / peer, ceiling_img_s / peer
        else:
            continue
        out.append(
            {
                'target': t.label,
                'minimum': t.minimum,
                'measured': round(measured, 2),
                'at_ceiling': round(at_ceiling, 2),
                'reachable_by_gemm_alone': at_ceiling >= t.minimum,
            }
        )
    return out


def render(data: dict, out: Path) -> None:
    """``profile-cpu.md`` (one row per model) and ``profile-cpu.png`` (time shares as stacked bars)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ref = data['reference_gflop_s']
    head = '| model | img/s | GFLOP/s | % of 1x1 rate | ceiling % | ' + ' | '.join(
        f'{c} % (GFLOP/s)' for c in CATEGORIES
    )
    lines = [head + ' |', '|' + '---|' * (5 + len(CATEGORIES))]
    for p in data['models']:
        cells = []
        for c in CATEGORIES:
            e = p['categories'][c]
            cells.append(f'{e["share_pct"]:.1f}' + (f' ({e["gflop_s"]:.0f})' if e['gflop_s'] else ''))
        lines.append(
            f'| `{p["model"]}` | {p["img_per_s"]:.1f} | {p["gflop_s"]:.0f} | {p["pct_of_reference"]:.0f} | '
            f'{p["ceiling_pct_of_reference"]:.0f} | ' + ' | '.join(cells) + ' |'
        )
    if data.get('targets'):
        lines += [
            '',
            '| target | needed | measured here | at the ceiling | reachable by faster GEMMs alone |',
            '|---|---|---|---|---|',
        ]
        for t in data['targets']:
            lines.append(
                f'| {t["target"]} | {t["minimum"]:g} | {t["measured"]:.2f} | {t["at_ceiling"]:.2f} | '
                f'{"yes" if t["reachable_by_gemm_alone"] else "no"} |'
            )
    m = data['meta']
    lines += [
        '',
        f'Batch {data["batch"]} at {data["img_size"]} px, fp32, channels_last, reparameterized, inference; share of '
        f'the forward time per kind of operation, with its achieved GFLOP/s. 1x1 rate: channels_last 1024->1024 '
        f'1x1 conv on 28x28 in the same process, {ref:.0f} GFLOP/s. "Ceiling": the share of that rate the model '
        'would reach if its GEMMs ran exactly at it and everything else took the time measured; "at the ceiling": '
        "a target's ratio (or % of the rate) with our model at its ceiling and the peer as measured here. Measured "
        f'{m["date"]} on {m["cpu"]} ({m["threads"]} threads, torch {m["torch"]}), allocator trimming off. '
        f'Source: `model_cards/results/{out.name}`; `hybrid-zoo profile` regenerates it.',
    ]
    write_atomic(out.with_suffix('.md'), '\n'.join(lines) + '\n')

    fig, ax = plt.subplots(figsize=(8, 0.5 * len(data['models']) + 1.6))
    names = [p['model'] for p in data['models']]
    left = [0.0] * len(names)
    for c in CATEGORIES:
        share = [p['categories'][c]['share_pct'] for p in data['models']]
        ax.barh(names, share, left=left, label=c)
        left = [a + b for a, b in zip(left, share, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel('share of CPU inference time (%)')
    ax.set_title('Where the time goes (batch 32, 224 px, 2 cores)')
    ax.legend(ncol=4, fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.25))
    fig.tight_layout()
    write_figure_atomic(fig, out.with_suffix('.png'))
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo profile',
        description='Where CPU inference time goes, per kind of operation (GEMM, depthwise, attention, activations, '
        'rest), and the ceiling that puts on the share of the 1x1-conv rate a model can reach.',
    )
    p.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS), help='timm model names')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--iters', type=int, default=4, help='timed forwards per model (median; default: %(default)s)')
    p.add_argument('--out', default=str(RESULTS_DIR / 'profile-cpu.json'), help='results file (default: %(default)s)')
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from .bench import exec_with_no_trim

    argv = list(sys.argv[1:] if argv is None else argv)
    exec_with_no_trim(['-m', 'hybrid_zoo.profile', *argv])  # the benchmark's allocator setting
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    from tqdm.auto import tqdm

    ref = reference_rate(args.batch_size)
    models = []
    for name in tqdm(args.models, desc='profile', unit='model'):
        models.append(profile_model(name, args.batch_size, args.img_size, args.iters, ref=ref))
        p = models[-1]
        _log.info(
            '%s: %.1f img/s, %.0f%% of the 1x1 rate (ceiling %.0f%%)',
            name,
            p['img_per_s'],
            p['pct_of_reference'],
            p['ceiling_pct_of_reference'],
        )
    meta = dict(machine_meta(), allocator='no-trim')
    data = {
        'meta': meta,
        'batch': args.batch_size,
        'img_size': args.img_size,
        'reference_gflop_s': round(ref / 1e9, 1),
        'models': models,
        'targets': target_ceilings(models),
    }
    out = Path(args.out)
    write_json_atomic(out, data)
    render(data, out)
    print(out.with_suffix('.md').read_text())
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
