"""``hybrid-zoo export``: the deployed forms written (``hybrid_zoo.deploy``) and priced with the trainer's evaluation
(``hybrid_zoo.train.evaluate``); ``--measure`` and ``--record`` write result files (``hybrid_zoo.benchmarks``)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from hybrid_zoo_config.fields import IntRange, add_verbosity_flags, verbosity_of
from hybrid_zoo_config.outputs import unwritable_output

MIN_OPSET = 17  # the exporters' LayerNorm and SDPA need it


def newest_opset() -> int:
    """The newest ONNX opset the installed onnx knows (imported only when ``--opset`` is given)."""
    import onnx

    return onnx.defs.onnx_opset_version()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo export',
        description='Export a model to ONNX (dynamic batch/height/width) and check it against eager PyTorch, '
        'or (--measure) measure folding, torch.compile and ONNX parity for many models.',
    )
    p.add_argument(
        '--model', default='convformer_tiny', help='timm model name, hf-hub:org/name, local-dir:PATH or a model folder'
    )
    p.add_argument('--pretrained', action='store_true', help='load the weights named by --model')
    p.add_argument('--num-classes', type=int, default=None, help='override the number of classes')
    p.add_argument('--output', default='model.onnx', help='ONNX file to write')
    p.add_argument(
        '--img-size',
        type=IntRange('--img-size', 32, 4096),
        default=224,
        help='side of the example input used for export, 32 to 4096 (default: %(default)s)',
    )
    p.add_argument(
        '--opset',
        type=IntRange('--opset', MIN_OPSET, newest_opset),
        default=18,
        help=f'ONNX opset, {MIN_OPSET} to the newest the installed onnx knows (default: %(default)s)',
    )
    p.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo', help='PyTorch ONNX exporter')
    p.add_argument('--no-reparam', action='store_true', help='export the training form (BatchNorm not folded)')
    p.add_argument(
        '--measure',
        nargs='*',
        metavar='MODEL',
        help='measure folding/compile/ONNX parity for these models (none given: the nine) into --results',
    )
    p.add_argument(
        '--results',
        default='runs/deploy.json',
        help='results file for --measure (default: %(default)s; the committed model_cards/results/deploy.json only when '
        'named)',
    )
    g = p.add_argument_group(
        'int8',
        'Post-training static quantization with ONNX Runtime (QDQ: int8 weights per channel, uint8 activations, '
        'MinMax calibration on real images); --output is then the int8 ONNX file.',
    )
    g.add_argument('--int8', action='store_true', help='write the int8-quantized ONNX model')
    g.add_argument(
        '--calibration-dataset',
        metavar='DATASET',
        help='images to calibrate on (what hybrid-zoo train --dataset takes); required with --int8',
    )
    g.add_argument('--calibration-split', default='train', help='split to calibrate on (default: %(default)s)')
    g.add_argument(
        '--calibration-samples',
        type=IntRange('--calibration-samples', 1, 1_000_000),
        default=256,
        help='calibration images (default: %(default)s)',
    )
    g.add_argument(
        '--evaluate-split',
        metavar='SPLIT',
        help='also report fp32 and int8 top-1 on this split of the calibration dataset (e.g. test), for the ONNX '
        'Runtime file and for the PT2E flow on the same calibration images',
    )
    g.add_argument(
        '--record',
        metavar='JSON',
        help='also add the report to this results file under the architecture name (other entries are kept), '
        'e.g. model_cards/results/int8-fmnist.json, which the model cards show',
    )
    add_verbosity_flags(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo export``: 0 on parity, 1 when the ONNX file departs from eager, 2 for bad input."""
    args = build_parser().parse_args(argv)
    if args.int8 and not args.calibration_dataset:
        print(
            'hybrid-zoo export: --int8 needs --calibration-dataset DATASET: int8 ranges come from real images, not '
            'noise',
            file=sys.stderr,
        )
        return 2
    measuring = args.measure is not None
    problem = unwritable_output(
        files={
            '--output': None if measuring else args.output,
            '--results': args.results if measuring else None,
            '--record': args.record if args.int8 and not measuring else None,
        }
    )
    if problem:
        print(f'hybrid-zoo export: {problem}', file=sys.stderr)
        return 2
    from hybrid_zoo.logs import setup_logging

    setup_logging(verbosity_of(args), fmt='%(message)s')
    import hybrid_zoo
    from hybrid_zoo.deploy import PARITY_SHAPES, export_onnx, onnx_max_abs_diff, reparameterize
    from hybrid_zoo.factory import ModelLoadError, create_model
    from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError

    if args.measure is not None:
        from hybrid_zoo.benchmarks.deploy_checks import measure

        measure(args.measure or hybrid_zoo.list_variants(), args.results, exporter='torchscript')
        print(f'wrote {args.results}')
        return 0
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    try:  # the checked loader: safetensors only, a config.json cannot choose the file (hybrid_zoo.factory)
        model = create_model(args.model, pretrained=args.pretrained, **kwargs).eval()
    except (ModelLoadError, PretrainedWeightsNotFoundError) as e:
        print(f'hybrid-zoo export: {e}', file=sys.stderr)
        return 2
    if not args.no_reparam:
        model = reparameterize(model)
    in_chans = model.pretrained_cfg.get('input_size', (3,))[0] if hasattr(model, 'pretrained_cfg') else 3
    if args.int8:
        from hybrid_zoo.train.checks import DataError

        try:  # both splits are opened before anything is built or written
            for split in filter(None, (args.calibration_split, args.evaluate_split)):
                _check_split(args.calibration_dataset, split)
            return _export_int8(model, args)
        except (DataError, FileNotFoundError) as e:
            print(f'hybrid-zoo export: --calibration-dataset {args.calibration_dataset}: {e}', file=sys.stderr)
            return 2
    shapes = [(s[0], in_chans, *s[2:]) for s in PARITY_SHAPES]
    path = export_onnx(model, args.output, (in_chans, args.img_size, args.img_size), args.opset, args.exporter)
    diff = onnx_max_abs_diff(model, path, shapes)
    print(json.dumps({'onnx': str(path), 'max_abs_diff_vs_eager': diff, 'shapes': shapes}))
    return 0 if diff < 1e-4 else 1


def _check_split(dataset: str, split: str) -> None:
    """Open ``split`` of ``dataset`` as evaluation would (raises DataError naming what is there instead)."""
    from hybrid_zoo.train.data import load_eval_split

    load_eval_split(dataset, split, max_samples=1)


def _export_int8(model, args: argparse.Namespace) -> int:
    """``export --int8``: fp32 ONNX, then ONNX Runtime static quantization calibrated on real images; with
    ``--evaluate-split`` the PT2E flow is priced beside it on the same images (it writes no file)."""
    import torch

    from hybrid_zoo.deploy import DeployError, build, export_onnx, has_vnni, ort_session, quantize_onnx
    from hybrid_zoo.train.evaluate import calibration_batches, compare_accuracy

    calibration = calibration_batches(model, args.calibration_dataset, args.calibration_split, args.calibration_samples)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        fp32 = export_onnx(model, Path(tmp) / 'fp32.onnx', tuple(calibration[0].shape[1:]), args.opset, args.exporter)
        reduce_range = not has_vnni()  # 7-bit weights where u8s8 sums would saturate (see quantize_onnx)
        path = quantize_onnx(fp32, out, calibration, reduce_range=reduce_range)
    report = {
        'onnx_int8': str(path),
        'reduce_range': reduce_range,
        'file_mb': round(path.stat().st_size / 1e6, 3),
        'calibration': f'{sum(len(b) for b in calibration)} images of {args.calibration_split}',
    }
    if args.evaluate_split:
        # the ONNX file as key prefix '', PyTorch's PT2E flow on the same calibration images as 'pt2e_'
        forms = {'': ort_session(path, torch.get_num_threads())}
        try:
            forms['pt2e_'] = build(model, 'int8-pt2e', calibration[0], calibration).run
        except DeployError as e:
            report['pt2e_error'] = str(e)
        report.update(compare_accuracy(model, forms, args.calibration_dataset, args.evaluate_split))
    print(json.dumps(report))
    if args.record:
        from hybrid_zoo.benchmarks.deploy_checks import record_int8

        record_int8(args.record, model, {**report, 'onnx_int8': path.name}, source=args.model)
    return 0
