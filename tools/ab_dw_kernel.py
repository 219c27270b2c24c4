"""A/B of one speed lever: 5x5 instead of 7x7 depthwise convs in the conv blocks.

The training profile puts the depthwise convs at 8-16% of a training step, mostly in their weight gradient
(``tools/kernel_levers.py``); a 5x5 kernel halves that work. Both arms of each model are profiled with
``hybrid_zoo.benchmarks.profile`` (inference: batch 32, folded; training step: batch 16; 224 px, channels_last) in two
interleaved rounds (AB / BA) in one process with glibc trimming off. Writes
``runs/ab-dw-kernel.json`` (``--out model_cards/results/ab-dw-kernel.json``: the committed file)::

    python tools/ab_dw_kernel.py
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402
from hybrid_zoo_config.results import tool_parser  # noqa: E402

ARGS = tool_parser(__doc__, 'ab-dw-kernel.json').parse_args()  # --help answers before anything is measured
exec_with_no_trim(sys.argv)

import timm  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import hybrid_zoo  # noqa: E402, F401
from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.candidates import SEP  # noqa: E402  (registers <model>__dw5: the kernel is the lab's knob)
from hybrid_zoo.benchmarks.profile import profile_model  # noqa: E402
from hybrid_zoo.benchmarks.profile_ops import reference_rate  # noqa: E402
from hybrid_zoo.benchmarks.profile_training import profile_training  # noqa: E402
from hybrid_zoo.benchmarks.results import machine_meta  # noqa: E402
from hybrid_zoo.flops import count_macs  # noqa: E402
from hybrid_zoo.models.variants import VARIANTS  # noqa: E402

MODELS = ('convformer_tiny_early', 'convformer_tiny_late', 'convformer_small_late', 'convformer_base_late')
KERNELS = (7, 5)  # registered default first
ROUNDS = 2


def main() -> int:
    ref = reference_rate(32)
    runs: dict = {(m, k): [] for m in MODELS for k in KERNELS}
    with tqdm(total=ROUNDS * len(runs), desc='A/B', unit='arm') as bar:
        for r in range(ROUNDS):
            for model in MODELS:
                for k in KERNELS if r % 2 == 0 else KERNELS[::-1]:
                    kwargs = {**VARIANTS[model].kwargs(), 'conv_kernel_size': k}  # the registered model, kernel k
                    infer = profile_model(f'{model}{SEP}dw5', 32, 224, iters=3, ref=ref, model_kwargs=kwargs)
                    train = profile_training(f'{model}{SEP}dw5', 16, 224, iters=3, ref=ref, model_kwargs=kwargs)
                    runs[model, k].append((infer, train))
                    bar.update(1)
    out: dict = {'meta': dict(machine_meta(), allocator='no-trim', rounds=ROUNDS), 'models': {}}
    for model in MODELS:
        arms = {}
        for k in KERNELS:
            net = timm.create_model(f'{model}{SEP}dw5', **VARIANTS[model].kwargs(), conv_kernel_size=k).eval()
            arms[k] = {
                'gmacs': round(count_macs(net, (3, 224, 224)).gmacs, 3),
                'infer_img_s': statistics.median(i['img_per_s'] for i, _ in runs[model, k]),
                'train_img_s': statistics.median(t['img_per_s'] for _, t in runs[model, k]),
                'train_depthwise_pct': statistics.median(
                    t['categories']['depthwise']['share_pct'] for _, t in runs[model, k]
                ),
            }
        a, b = arms[KERNELS[0]], arms[KERNELS[1]]
        out['models'][model] = {
            'arms': {str(k): v for k, v in arms.items()},
            'gmacs_change_pct': round(100 * (b['gmacs'] / a['gmacs'] - 1), 1),
            'infer_speedup': round(b['infer_img_s'] / a['infer_img_s'], 3),
            'train_speedup': round(b['train_img_s'] / a['train_img_s'], 3),
        }
        print(model, {k: out['models'][model][k] for k in ('infer_speedup', 'train_speedup', 'gmacs_change_pct')})
    write_json_atomic(ARGS.out, out)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
