"""Which int8 flow to ship (deployment issue), the accuracy half: PyTorch's PT2E (x86 inductor quantizer) and ONNX
Runtime's static QDQ quantizer on the same trained weights and calibration images, each against fp32 on a test split.

Both flows are :func:`hybrid_zoo.deploy.build` modes (``int8-pt2e``, ``int8``), so the speed half is the benchmark,
where both are timed in alternation with eager fp32 on the same batch::

    hybrid-zoo bench --models convformer_small --modes eager int8 int8-pt2e --no-train --no-latency \\
        --results model_cards/results --name int8-flows

This tool writes ``model_cards/results/int8-flows-accuracy.json``::

    python tools/int8_flows.py --model local-dir:runs/compare/long64/convformer_tiny-s0/model \\
        --dataset data/fashion_mnist
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402

exec_with_no_trim(sys.argv)

from timm.models import reparameterize_model  # noqa: E402

import hybrid_zoo  # noqa: E402, F401
from hybrid_zoo import deploy  # noqa: E402
from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.results import RESULTS_DIR, machine_meta  # noqa: E402
from hybrid_zoo.factory import create_model  # noqa: E402

FLOWS = {'ort_qdq': 'int8', 'pt2e': 'int8-pt2e'}


def accuracy(source: str, dataset: str, split: str, samples: int | None, calibration_images: int) -> dict:
    model = reparameterize_model(create_model(source, pretrained=True).eval())
    calibration = deploy.calibration_batches(model, dataset, 'train', calibration_images)
    out = {}
    for flow, mode in FLOWS.items():
        d = deploy.build(model, mode, calibration[0], calibration)
        out[flow] = dict(deploy.compare_accuracy(model, d.run, dataset, split, samples), build_s=round(d.build_s, 1))
    return out


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--model', required=True, help='trained weights: a timm name, hf-hub: or local-dir:')
    p.add_argument('--dataset', default='data/fashion_mnist')
    p.add_argument('--split', default='test')
    p.add_argument('--samples', type=int, help='test images (default: all)')
    p.add_argument('--calibration-images', type=int, default=256)
    p.add_argument('--out', type=Path, default=RESULTS_DIR / 'int8-flows-accuracy.json')
    args = p.parse_args()
    name = args.model.rstrip('/').rsplit('/', 2)[-2] if args.model.startswith('local-dir:') else args.model
    out = {
        'meta': dict(machine_meta(), allocator='no-trim'),
        'command': ' '.join(['python tools/int8_flows.py', *sys.argv[1:]]),
        'model': name,
        'calibration_images': args.calibration_images,
        'flows': accuracy(args.model, args.dataset, args.split, args.samples, args.calibration_images),
    }
    write_json_atomic(args.out, out)
    print(out['flows'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
