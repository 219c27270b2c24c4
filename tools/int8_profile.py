"""Where the time of a PT2E int8 model goes: a per-op profile of the compiled int8 graph, against eager fp32.

Why: one round of the deployment bench had our late tiny model gaining 1.27x from PT2E int8 where the mid model gained
2.23x and TinyViT-5M 2.5x. This times each model's eager fp32 and int8 forms in alternation for several rounds (batch
32, 224 px, 2 threads, glibc kept from trimming) and profiles the int8 graph with inductor's kernel names recorded, so
the ops that stay in fp32 (an activation the quantizer does not fuse, the quantize/dequantize around it, attention)
show up by name, grouped into:

- ``int8 conv/linear``: oneDNN's quantized convolutions and linears (``onednn::qconv*``, ``qlinear*``);
- ``fused fp32 kernels``: inductor's generated C++ loops (``cpp_fused_*``: activations, norms, (de)quantization);
- ``attention``: scaled-dot-product attention and its matmuls (fp32 in this flow);
- ``fp32 conv/linear``: convolutions that stayed unquantized;
- ``other``.

Writes a JSON file (``runs/int8-profile.json`` unless ``--results`` names another, e.g. the committed
``model_cards/results/int8-profile.json``)::

    python tools/int8_profile.py --models convformer_tiny convformer_tiny_late tiny_vit_5m_224 --rounds 3
"""

from __future__ import annotations

import argparse
import sys

MODELS = ('convformer_tiny', 'convformer_tiny_late', 'tiny_vit_5m_224')
SEP = '__'  # an architecture-candidate arm: <architecture>__<arm> (hybrid_zoo.benchmarks.candidates.SEP)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], epilog=__doc__.split('\n\n', 1)[1])
    p.add_argument(
        '--models',
        nargs='+',
        default=list(MODELS),
        help="timm model names, or the lab's candidate arms <architecture>__<arm> (default: %(default)s)",
    )
    p.add_argument('--rounds', type=int, default=3, help='profiled rounds, models interleaved (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=32, help='images per batch (default: %(default)s)')
    p.add_argument('--img-size', type=int, default=224, help='input side in pixels (default: %(default)s)')
    p.add_argument('--iters', type=int, default=3, help='timed and profiled batches per round (default: %(default)s)')
    p.add_argument(
        '--model-kwargs',
        nargs='*',
        default=[],
        metavar='KEY=VALUE',
        help="constructor arguments for our models, values as Python literals (e.g. act_layer='silu')",
    )
    p.add_argument('--results', default='runs/int8-profile.json', help='output JSON file (default: %(default)s)')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before any heavy import: --help answers at once
    for name in ('rounds', 'batch_size', 'img_size', 'iters'):
        if getattr(args, name) < 1:
            build_parser().error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    import ast

    try:
        kwargs = {k: ast.literal_eval(v) for k, v in (kv.split('=', 1) for kv in args.model_kwargs)}
    except (ValueError, SyntaxError) as e:
        build_parser().error(
            f'--model-kwargs: expected KEY=VALUE with a Python literal value, got {args.model_kwargs}: {e}'
        )
    from hybrid_zoo.benchmarks.speed import exec_with_no_trim

    exec_with_no_trim([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])
    return run(args, kwargs)


def _category(key: str) -> str:
    k = key.lower()
    if 'qconv' in k or 'qlinear' in k:
        return 'int8 conv/linear'
    if 'cpp_fused' in k:  # inductor's loops, named graph_<n>_cpp_fused_<ops>_<i> when kernel profiling is on
        return 'fused fp32 kernels'
    if 'scaled_dot_product' in k or 'bmm' in k or 'matmul' in k or 'softmax' in k:
        return 'attention'
    if 'convolution' in k or 'conv2d' in k or 'mkldnn' in k or 'addmm' in k or 'linear' in k:
        return 'fp32 conv/linear'
    return 'other'


def run(args, kwargs: dict) -> int:
    import statistics
    import time

    import torch
    import torch._inductor.config as inductor_config
    from timm.models import reparameterize_model
    from tqdm.auto import tqdm

    import hybrid_zoo  # noqa: F401  (registers our models)

    if any(SEP in name for name in args.models):
        import hybrid_zoo.benchmarks.candidates  # noqa: F401  (registers the lab's <architecture>__<arm> models)
    from hybrid_zoo.atomic import write_json_atomic
    from hybrid_zoo.benchmarks.results import machine_meta
    from hybrid_zoo.deploy import build
    from hybrid_zoo.factory import create_model
    from hybrid_zoo.models.variants import ARCH_VERSION, VARIANTS

    inductor_config.cpp.enable_kernel_profile = True  # inductor's generated loops appear under their fused names
    torch.manual_seed(0)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size)
    calibration = [torch.randn(8, 3, args.img_size, args.img_size) for _ in range(4)]
    forms = {}
    for name in tqdm(args.models, desc='build eager + int8-pt2e', unit='model'):
        model = create_model(name, **(kwargs if name in VARIANTS else {})).eval()
        model = reparameterize_model(model)
        forms[name] = {mode: build(model, mode, x, calibration) for mode in ('eager', 'int8-pt2e')}

    def timed(fn, iters: int) -> list[float]:
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(x)
            out.append(time.perf_counter() - t0)
        return out

    rows: dict[str, dict] = {n: {'eager_img_s': [], 'int8_img_s': [], 'ops': {}} for n in args.models}
    bar = tqdm(total=args.rounds * len(args.models), desc='profile', unit='model-round')
    for r in range(args.rounds):
        order = args.models if r % 2 == 0 else args.models[::-1]  # drift hits every model alike
        for name in order:
            eager, int8 = forms[name]['eager'].run, forms[name]['int8-pt2e'].run
            eager(x), int8(x)  # warm
            e = timed(eager, args.iters)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                q = timed(int8, args.iters)
            rows[name]['eager_img_s'].append(args.batch_size / statistics.median(e))
            rows[name]['int8_img_s'].append(args.batch_size / statistics.median(q))
            total = sum(ev.self_cpu_time_total for ev in prof.key_averages())
            for ev in prof.key_averages():
                share = rows[name]['ops'].setdefault(ev.key, [])
                share.append(ev.self_cpu_time_total / total if total else 0.0)
            bar.update()
    bar.close()

    out = {'meta': {**machine_meta(), 'batch_size': args.batch_size, 'img_size': args.img_size}, 'models': {}}
    for name, row in rows.items():
        ops = {k: statistics.fmean(v + [0.0] * (args.rounds - len(v))) for k, v in row['ops'].items()}
        cats: dict[str, float] = {}
        for k, share in ops.items():
            cats[_category(k)] = cats.get(_category(k), 0.0) + share
        top = sorted(ops.items(), key=lambda kv: -kv[1])[:15]
        out['models'][name] = {
            'architecture_version': ARCH_VERSION if name in VARIANTS else None,
            'model_kwargs': kwargs if name in VARIANTS else {},
            'eager_img_s': [round(v, 2) for v in row['eager_img_s']],
            'int8_img_s': [round(v, 2) for v in row['int8_img_s']],
            'int8_speedup': round(statistics.median(row['int8_img_s']) / statistics.median(row['eager_img_s']), 3),
            'int8_share_by_category': {k: round(v, 4) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
            'int8_top_ops': [{'op': k, 'share': round(v, 4)} for k, v in top],
        }
        print(
            f'{name:24s} eager {statistics.median(row["eager_img_s"]):6.1f} img/s  int8 '
            f'{statistics.median(row["int8_img_s"]):6.1f} img/s  ({out["models"][name]["int8_speedup"]:.2f}x)  '
            + ', '.join(f'{k} {v:.0%}' for k, v in out['models'][name]['int8_share_by_category'].items())
        )
    write_json_atomic(args.results, out)
    print(f'wrote {args.results}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
