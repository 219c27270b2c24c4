"""A/B of one speed lever: keys/values also pooled 2x at stride 16 in ``convformer_small``.

Both arms are profiled with ``hybrid_zoo.benchmarks.profile`` (batch 32, 224 px, folded, channels_last) in three
interleaved rounds (ABA / BAB order) in one process with glibc trimming off; the GMACs come from
``hybrid_zoo.flops``. Writes ``runs/ab-kv-pooling.json`` (``--out model_cards/results/ab-kv-pooling.json``: the committed file)::

    python tools/ab_kv_pooling.py
"""

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402
from hybrid_zoo_config.results import tool_parser  # noqa: E402

ARGS = tool_parser(__doc__, 'ab-kv-pooling.json').parse_args()  # --help answers before anything is measured
exec_with_no_trim(sys.argv)

import timm  # noqa: E402

import hybrid_zoo  # noqa: E402, F401
from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.profile import profile_model  # noqa: E402
from hybrid_zoo.benchmarks.profile_ops import reference_rate  # noqa: E402
from hybrid_zoo.benchmarks.results import machine_meta  # noqa: E402
from hybrid_zoo.flops import count_macs  # noqa: E402

MODEL = 'convformer_small'
ARMS = {'default': {}, 'kv_pool_stride16': {'kv_reductions': (1, 2, 2, 1)}}


def main() -> int:
    ref = reference_rate(32)
    runs = {k: [] for k in ARMS}
    for r in range(3):
        for arm in list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]:
            runs[arm].append(profile_model(MODEL, 32, 224, iters=3, ref=ref, model_kwargs=ARMS[arm]))
    out = {'meta': dict(machine_meta(), allocator='no-trim'), 'model': MODEL, 'reference_gflop_s': round(ref / 1e9, 1)}
    for arm, kwargs in ARMS.items():
        net = timm.create_model(MODEL, **kwargs).eval()
        out[arm] = {
            'model_kwargs': {k: list(v) for k, v in kwargs.items()},
            'gmacs': round(count_macs(net, (3, 224, 224)).gmacs, 3),
            'img_per_s': [p['img_per_s'] for p in runs[arm]],
            'img_per_s_median': statistics.median(p['img_per_s'] for p in runs[arm]),
            'attention_share_pct': statistics.median(p['categories']['attention']['share_pct'] for p in runs[arm]),
            'pct_of_reference': statistics.median(p['pct_of_reference'] for p in runs[arm]),
            'ceiling_pct_of_reference': statistics.median(p['ceiling_pct_of_reference'] for p in runs[arm]),
        }
    a, b = out['default'], out['kv_pool_stride16']
    out['speedup'] = round(b['img_per_s_median'] / a['img_per_s_median'], 3)
    out['gmacs_change_pct'] = round(100 * (b['gmacs'] / a['gmacs'] - 1), 1)
    # the GMACs the change removes, put back as GEMMs running at the reference rate: the speed-up left
    restore_s = 2e9 * (a['gmacs'] - b['gmacs']) * 32 / (ref * 1.0)
    out['speedup_with_gmacs_restored'] = round(32 / (32 / b['img_per_s_median'] + restore_s) / a['img_per_s_median'], 3)
    write_json_atomic(ARGS.out, out)
    print({k: out[k] for k in ('speedup', 'gmacs_change_pct', 'speedup_with_gmacs_restored')})
    return 0


if __name__ == '__main__':
    sys.exit(main())
