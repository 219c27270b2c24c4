"""Architecture v2: price each design candidate on the yardstick, paired by seed, and decide.

Runs, seed-major so that a cut session still has every arm paired on the first seeds::

    python tools/arch_v2.py run [--seeds 0 1 2] [--arms v1 alt2 sha nodw]

Each (arm, seed) is one ``hybrid-zoo compare --recipe yard96`` run of ``convformer_tiny`` built with the arm's
kwargs (``hybrid_zoo.benchmarks.candidates``), resumable; results go to ``model_cards/results/fmnist-yard96[-<arm>].json``.
The runs were made while v1 was the registered ``convformer_tiny`` (``fmnist-yard96.json`` is v1 without a variant
name); since ``alt2`` became the registered v2, every arm, v1 included, is built from its complete kwargs.

Then ``python tools/arch_v2.py report --bench model_cards/results/arch-v2-bench-tiny.json`` writes
``model_cards/results/arch-v2.json`` and ``.md``: per arm, the paired test top-1 differences against v1, their mean
and standard error, the seed noise of v1, the speed ratios from the bench (median of per-round paired ratios), and
the decision.

**Decision rule (written before the runs):** an arm is adopted only if (a) the mean of its paired test top-1
differences against v1 is above minus one standard error of those differences, and (b) it is faster: the median
of its per-round paired inference images/s ratios against v1 in one interleaved bench run is above 1.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'model_cards' / 'results'
MODEL = 'convformer_tiny'
RECIPE = 'yard96'
ARMS = ('v1', 'alt2', 'sha', 'nodw')
# arms timed in the same bench but not priced on the yardstick (each run costs 3 seeds x 7.5 min), and why
SPEED_ONLY: dict[str, tuple[str, str]] = {  # arm: (its v1 baseline in the bench, why not priced)
    'alt2_nodw': (MODEL, 'slower than alt2; nodw loses accuracy'),
    'sha_nodw': (MODEL, 'sha and nodw each lose accuracy'),
    'kv4': (f'{MODEL}_early', 'not run yet (early yardstick)'),
}


def results_file(arm: str) -> Path:
    return RESULTS / (f'fmnist-{RECIPE}.json' if arm == 'v1' else f'fmnist-{RECIPE}-{arm}.json')


def compare_cmd(arm: str, seeds: list[int]) -> list[str]:
    cmd = [sys.executable, '-m', 'hybrid_zoo_cli', 'compare', '--recipe', RECIPE, '--models', MODEL]
    cmd += ['--seeds', *map(str, seeds), '--results', str(results_file(arm))]
    from hybrid_zoo.benchmarks.candidates import arm_kwargs

    kwargs = arm_kwargs(MODEL, arm)
    return cmd + ['--variant', arm, '--model-kwargs', *[f'{k}={v!r}'.replace(' ', '') for k, v in kwargs.items()]]


def run(seeds: list[int], arms: list[str]) -> None:
    for seed in seeds:
        for arm in arms:
            subprocess.run(compare_cmd(arm, [seed]), check=True, cwd=ROOT)
    for arm in arms:  # every finished seed into one results file per arm (finished runs are only read)
        subprocess.run(compare_cmd(arm, seeds), check=True, cwd=ROOT)


def _top1_by_seed(arm: str) -> dict[int, float]:
    path = results_file(arm)
    if not path.exists():
        return {}
    return {r['seed']: r['test_top1'] for r in json.loads(path.read_text())['runs'] if r['model'] == MODEL}


def _speed(bench: dict, arm: str, key: str, model: str = MODEL) -> dict | None:
    rounds = bench['rounds']
    # the committed bench ran before v2: there v1 is the plain name; a bench run since names it <model>__v1
    base = f'{model}__v1' if f'{model}__v1' in rounds else model
    name = base if arm == 'v1' else f'{model}__{arm}'
    if name not in rounds or base not in rounds:
        return None
    ratios = [a / b for a, b in zip(rounds[name][key], rounds[base][key], strict=True)]
    return {'median': round(statistics.median(ratios), 3), 'per_round': [round(r, 3) for r in ratios]}


def report(bench_path: Path) -> dict:
    bench = json.loads(bench_path.read_text())
    base = _top1_by_seed('v1')
    out = {
        'model': MODEL,
        'recipe': RECIPE,
        'decision_rule': __doc__.split('**Decision rule (written before the runs):**')[1].strip().replace('\n', ' '),
        'bench': bench_path.name,
        'v1_seed_noise': {
            'seeds': sorted(base),
            'top1': [base[s] for s in sorted(base)],
            'mean': round(statistics.fmean(base.values()), 3) if base else None,
            'std': round(statistics.stdev(base.values()), 3) if len(base) > 1 else None,
        },
        'arms': {},
    }
    for arm in ARMS:
        acc = _top1_by_seed(arm)
        paired = sorted(set(acc) & set(base))
        diffs = [acc[s] - base[s] for s in paired]
        mean = statistics.fmean(diffs) if diffs else None
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
        infer, train = _speed(bench, arm, 'infer_img_s'), _speed(bench, arm, 'train_img_s')
        accurate = mean is not None and se is not None and mean > -se
        faster = infer is not None and infer['median'] > 1
        out['arms'][arm] = {
            'seeds': paired,
            'top1': [acc[s] for s in paired],
            'mean_top1': round(statistics.fmean(acc[s] for s in paired), 3) if paired else None,
            'paired_diff': [round(d, 3) for d in diffs],
            'paired_mean': None if mean is None else round(mean, 3),
            'paired_se': None if se is None else round(se, 3),
            'infer_ratio': infer,
            'train_ratio': train,
            'adopted': None if arm == 'v1' or se is None else bool(accurate and faster),  # None: too few seeds
        }
    for arm, (model, why) in SPEED_ONLY.items():
        out['arms'][arm] = {
            'baseline': model,
            'infer_ratio': _speed(bench, arm, 'infer_img_s', model),
            'train_ratio': _speed(bench, arm, 'train_img_s', model),
            'not_priced': why,
            'adopted': False,
        }
    (RESULTS / 'arch-v2.json').write_text(json.dumps(out, indent=1) + '\n')
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = p.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run')
    r.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    r.add_argument('--arms', nargs='+', default=list(ARMS), choices=ARMS)
    q = sub.add_parser('report')
    q.add_argument('--bench', type=Path, default=RESULTS / 'arch-v2-bench-tiny.json')
    args = p.parse_args(argv)
    if args.cmd == 'run':
        run(args.seeds, args.arms)
    else:
        print(json.dumps(report(args.bench)['arms'], indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
