"""A/B of the deploy-time fusion for eager users (deployment issue): oneDNN convolutions with GELU and residual-add
post-ops (``hybrid_zoo.layers.fused``) against the plain folded model, on each of our nine models.

Both arms are ``timm.models.reparameterize_model`` of the same weights, one with ``HYBRID_ZOO_POINTWISE_FUSION=0``;
batch 32 at 224 px, channels_last, ``inference_mode``, timed in alternation (ABBA) by the benchmark's own loop
(``hybrid_zoo.benchmarks.speed_worker._timed``) in one process with glibc trimming off. Records the speed-up (median
of per-pair ratios), both images/s and the largest logit difference. Writes
``model_cards/results/ab-pointwise-fusion.json``::

    python tools/ab_pointwise_fusion.py [--models convformer_tiny ...] [--iters 8]
"""

import argparse
import contextlib
import copy
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402

exec_with_no_trim(sys.argv)

import timm  # noqa: E402
import torch  # noqa: E402
from timm.models import reparameterize_model  # noqa: E402
from tqdm import tqdm  # noqa: E402

import hybrid_zoo  # noqa: E402, F401
from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.results import RUNS_DIR, machine_meta  # noqa: E402
from hybrid_zoo.benchmarks.speed_worker import _CpuProbe, _Device, _forward, _timed  # noqa: E402
from hybrid_zoo.layers import fused  # noqa: E402
from hybrid_zoo.models import MODEL_NAMES  # noqa: E402
from hybrid_zoo_config.bench import BenchConfig  # noqa: E402


def folded(model: torch.nn.Module, fuse: bool) -> torch.nn.Module:
    with contextlib.nullcontext() if fuse else fused.unfused():
        return reparameterize_model(copy.deepcopy(model)).to(memory_format=torch.channels_last)


def measure(name: str, batch: int, img_size: int, warmup: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    arms = {'plain': folded(model, False), 'fused': folded(model, True)}
    n_fused = sum(isinstance(m, (fused.ConvAct, fused.ConvAdd)) for m in arms['fused'].modules())
    x = torch.randn(batch, 3, img_size, img_size).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        diff = (arms['fused'](x) - arms['plain'](x)).abs().max().item()
    dev = _Device(BenchConfig())
    samples = _timed({k: _forward(m, x, dev) for k, m in arms.items()}, warmup, iters, dev, _CpuProbe())
    t = {k: v['t'] for k, v in samples.items()}
    return {
        'fused_modules': n_fused,
        'max_abs_diff': diff,
        'plain_img_s': round(batch / statistics.median(t['plain']), 2),
        'fused_img_s': round(batch / statistics.median(t['fused']), 2),
        'speedup': round(statistics.median(p / f for p, f in zip(t['plain'], t['fused'], strict=True)), 3),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--models', nargs='+', default=list(MODEL_NAMES))
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--iters', type=int, default=8, help='timed batches per arm (alternating)')
    p.add_argument(
        '--out',
        type=Path,
        default=RUNS_DIR / 'ab-pointwise-fusion.json',
        help='results file (default: %(default)s; the committed one, model_cards/results/ab-pointwise-fusion.json, only when named)',
    )
    args = p.parse_args()
    if not fused.pointwise_fusion_available():
        p.error('this PyTorch has no working oneDNN pointwise-fused convolution (torch.ops.mkldnn); nothing to A/B')
    out = {
        'meta': dict(machine_meta(), allocator='no-trim'),
        'command': ' '.join(['python tools/ab_pointwise_fusion.py', *sys.argv[1:]]),
        'batch_size': args.batch_size,
        'img_size': args.img_size,
        'iters': args.iters,
        'models': {},
    }
    for name in tqdm(args.models, desc='fusion A/B', unit='model'):
        out['models'][name] = measure(name, args.batch_size, args.img_size, args.warmup, args.iters)
        tqdm.write(f'{name}: {out["models"][name]}')
        write_json_atomic(args.out, out)
    speedups = [m['speedup'] for m in out['models'].values()]
    out['speedup_median'] = round(statistics.median(speedups), 3)
    out['speedup_range'] = [min(speedups), max(speedups)]
    write_json_atomic(args.out, out)
    print({k: out[k] for k in ('speedup_median', 'speedup_range')})
    return 0


if __name__ == '__main__':
    sys.exit(main())
