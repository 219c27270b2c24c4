"""Which int8 flow to ship (deployment issue): PyTorch's PT2E with the x86 inductor quantizer vs ONNX Runtime's
static QDQ quantizer, measured on one model side by side.

Both flows quantize the same folded model statically (per-channel int8 weights, uint8 activations) on the same
calibration batches; PT2E runs as ``torch.compile`` with freezing (its quantized convolutions and linears lowered
to oneDNN by torchao's inductor passes), QDQ in ONNX Runtime's CPU execution provider (``hybrid_zoo.deploy``).
Speed: batch 32 at 224 px, eager fp32 and both int8 forms timed in alternation over interleaved rounds (medians).
Accuracy, when ``--accuracy-model`` names trained weights: each int8 form against the fp32 model on a test split.
PT2E needs ``torchao`` (not a dependency of hybrid_zoo: ``pip install torchao``). Writes
``model_cards/results/int8-flows.json``::

    python tools/int8_flows.py --model convformer_small \\
        --accuracy-model local-dir:runs/compare/long64/convformer_tiny-s0/model --dataset data/fashion_mnist
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402

exec_with_no_trim(sys.argv)

import torch  # noqa: E402
from timm.models import reparameterize_model  # noqa: E402

import hybrid_zoo  # noqa: E402, F401
from hybrid_zoo import deploy  # noqa: E402
from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.results import RESULTS_DIR, machine_meta  # noqa: E402
from hybrid_zoo.factory import create_model  # noqa: E402


def pt2e_int8(model: torch.nn.Module, example: torch.Tensor, calibration) -> deploy.Deployed:
    """``model`` quantized by PT2E (``X86InductorQuantizer``'s default static config) and compiled with freezing;
    built and checked against eager on ``example`` like :func:`hybrid_zoo.deploy.build`'s modes."""
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    model = model.eval()
    with torch.inference_mode():
        expected = model(example)
    t0 = time.perf_counter()
    batch = torch.export.Dim('batch', min=1, max=4096)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(x)
    converted = convert_pt2e(prepared)
    with inductor_config.patch(freezing=True), torch.no_grad():
        compiled = torch.compile(converted, dynamic=True)
        got = compiled(example)  # compiles now: the build time includes it

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True), torch.no_grad():
            return compiled(x)

    return deploy.Deployed('pt2e', run, time.perf_counter() - t0, (got - expected).abs().max().item())


def _time(fns: dict, rounds: int, iters: int) -> dict[str, float]:
    """Images/s of each callable, interleaved: every round runs each once warm, then ``iters`` timed calls."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            fn, n = fns[name]
            fn()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            samples[name].append(n * iters / (time.perf_counter() - t0))
    return {k: round(statistics.median(v), 2) for k, v in samples.items()}


def speed(name: str, batch_size: int, img_size: int, rounds: int, iters: int) -> dict:
    torch.manual_seed(0)
    model = reparameterize_model(create_model(name).eval())
    x = torch.randn(batch_size, 3, img_size, img_size)
    calibration = [torch.randn_like(x) for _ in range(2)]  # speed does not depend on the ranges
    ort = deploy.build(model, 'int8', x, calibration)
    pt2e = pt2e_int8(model, x, calibration)
    eager = deploy.build(model, 'eager', x)
    img_s = _time(
        {k: (lambda d=d: d.run(x), batch_size) for k, d in (('eager', eager), ('ort_qdq', ort), ('pt2e', pt2e))},
        rounds,
        iters,
    )
    out = {'model': name, 'batch_size': batch_size, 'img_size': img_size, 'rounds': rounds, 'iters': iters}
    for k, d in (('ort_qdq', ort), ('pt2e', pt2e)):
        out[k] = {'img_per_s': img_s[k], 'vs_eager_fp32': round(img_s[k] / img_s['eager'], 3)}
        out[k].update(build_s=round(d.build_s, 1), max_abs_diff=round(d.max_abs_diff, 4))
    out['eager_fp32_img_per_s'] = img_s['eager']
    return out


def accuracy(source: str, dataset: str, split: str, samples: int | None) -> dict:
    model = reparameterize_model(create_model(source, pretrained=True).eval())
    calibration = deploy.calibration_batches(model, dataset, 'train', 256)
    example = calibration[0]
    out = {'model': source.rsplit('/', 2)[-2] if source.startswith('local-dir:') else source, 'calibration_images': 256}
    for k, d in (
        ('ort_qdq', deploy.build(model, 'int8', example, calibration)),
        ('pt2e', pt2e_int8(model, example, calibration)),
    ):
        out[k] = deploy.compare_accuracy(model, d.run, dataset, split, samples)
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--model', default='convformer_small', help='model timed at --img-size (default: %(default)s)')
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--rounds', type=int, default=4)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument(
        '--accuracy-model', help='trained weights (a timm name, hf-hub: or local-dir:) for the accuracy part'
    )
    p.add_argument('--dataset', default='data/fashion_mnist')
    p.add_argument('--split', default='test')
    p.add_argument('--samples', type=int, help='test images (default: all)')
    p.add_argument('--out', type=Path, default=RESULTS_DIR / 'int8-flows.json')
    args = p.parse_args()
    try:
        import torchao
    except ImportError:
        p.error('PT2E needs torchao, which is not installed: pip install torchao')
    out = {
        'meta': dict(machine_meta(), torchao=torchao.__version__, allocator='no-trim'),
        'command': ' '.join(sys.argv),
    }
    out['speed'] = speed(args.model, args.batch_size, args.img_size, args.rounds, args.iters)
    print(out['speed'], flush=True)
    if args.accuracy_model:
        out['accuracy'] = accuracy(args.accuracy_model, args.dataset, args.split, args.samples)
        print(out['accuracy'], flush=True)
    write_json_atomic(args.out, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
