"""Deployment: BatchNorm folding, torch.compile graph checks, ONNX export with onnxruntime parity.

``hybrid-zoo export`` writes one model to ONNX (dynamic batch, height and width) and checks it against
eager PyTorch; ``hybrid-zoo export --measure`` measures folding, compile and ONNX parity for many models
into ``model_cards/results/deploy.json``.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort
import timm
import torch
import torch._dynamo
from timm.models import reparameterize_model
from torch import nn
from tqdm.auto import tqdm

import hybrid_zoo  # noqa: F401  (registers the models)
from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.results import machine_meta
from hybrid_zoo.factory import ModelLoadError, create_model
from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError
from hybrid_zoo.models.variants import ARCH_VERSION, VARIANTS
from hybrid_zoo_cli.export import build_parser

_log = logging.getLogger(__name__)

PARITY_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 224, 224), (2, 3, 193, 250), (3, 3, 96, 96))


def reparameterize(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with BatchNorm and layer scales folded into convs (timm's ``reparameterize_model``)."""

    return reparameterize_model(model.eval(), inplace=False)


def graph_breaks(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(graph count, graph break count) of ``torch.compile`` on ``model(x)``, from ``torch._dynamo.explain``."""

    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(x)
    return explanation.graph_count, explanation.graph_break_count


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: Sequence[int] = (3, 224, 224),
    opset: int = 18,
    exporter: str = 'dynamo',
) -> Path:
    """Write ``model`` (eval mode) to ONNX with dynamic batch, height and width; input ``pixel_values``, output ``logits``.

    The file appears only when complete (written next to ``path``, then renamed). ``exporter`` is
    'dynamo' (``torch.export``-based, the PyTorch default) or 'torchscript' (the legacy tracer; faster).
    """
    if opset < 17:
        raise ValueError(f'opset must be >= 17 (LayerNorm is a native op from 17), got {opset}')
    if exporter not in ('dynamo', 'torchscript'):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    if exporter == 'dynamo' and importlib.util.find_spec('onnxscript') is None:
        raise ImportError(
            "the dynamo ONNX exporter needs onnxscript: pip install 'hybrid_zoo[export]' (or exporter='torchscript')"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.randn(2, *input_size)
    fd, tmp = tempfile.mkstemp(suffix='.onnx', dir=path.parent)
    os.close(fd)
    try:
        common = dict(input_names=['pixel_values'], output_names=['logits'], opset_version=opset)
        if exporter == 'dynamo':
            dims = dict(
                batch=torch.export.Dim('batch', min=1, max=4096),
                height=torch.export.Dim('height', min=32, max=8192),
                width=torch.export.Dim('width', min=32, max=8192),
            )
            arg = next(iter(_forward_arg_names(model)))
            torch.onnx.export(
                model,
                (x,),
                tmp,
                dynamo=True,
                external_data=False,
                dynamic_shapes={arg: {0: dims['batch'], 2: dims['height'], 3: dims['width']}},
                **common,
            )
        else:
            torch.onnx.export(
                model,
                (x,),
                tmp,
                dynamo=False,
                dynamic_axes={'pixel_values': {0: 'batch', 2: 'height', 3: 'width'}, 'logits': {0: 'batch'}},
                **common,
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _forward_arg_names(model: nn.Module) -> list[str]:

    return [p for p in inspect.signature(model.forward).parameters if p != 'self']


def onnx_max_abs_diff(
    model: nn.Module, onnx_path: str | os.PathLike, shapes: Sequence[Sequence[int]] = PARITY_SHAPES
) -> float:
    """Largest |onnxruntime - eager| over random inputs of the given (B, C, H, W) shapes."""

    session = ort.InferenceSession(str(onnx_path), providers=['CPUExecutionProvider'])
    worst = 0.0
    model = model.eval()
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        got = torch.from_numpy(session.run(None, {'pixel_values': x.numpy()})[0])
        worst = max(worst, (got - expected).abs().max().item())
    return worst


def _time_per_batch(model: nn.Module, x: torch.Tensor, iters: int) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
        return (time.perf_counter() - start) / iters


def reparam_speedup(model: nn.Module, batch_size: int = 16, img_size: int = 224, rounds: int = 3) -> dict:
    """Eager channels_last images/s before and after folding, interleaved rounds, median."""
    plain = model.eval().to(memory_format=torch.channels_last)
    folded = reparameterize(plain).to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, img_size, img_size).to(memory_format=torch.channels_last)
    for m in (plain, folded):
        _time_per_batch(m, x, 1)  # warm-up: oneDNN primitive creation
    t_plain, t_folded = [], []
    for _ in range(rounds):
        t_plain.append(_time_per_batch(plain, x, 2))
        t_folded.append(_time_per_batch(folded, x, 2))
    ips_plain = batch_size / statistics.median(t_plain)
    ips_folded = batch_size / statistics.median(t_folded)
    return dict(
        img_per_s=round(ips_plain, 2), img_per_s_reparam=round(ips_folded, 2), speedup=round(ips_folded / ips_plain, 3)
    )


def measure_model(name: str, exporter: str = 'torchscript', speed: bool = True) -> dict:
    """Folding parity and speed, compile graph breaks, ONNX parity (eager-form and folded) for one timm model."""

    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    folded = reparameterize(model)
    row: dict = {'model': name}
    diffs = []
    for shape in PARITY_SHAPES:
        x = torch.randn(*shape)
        with torch.no_grad():
            diffs.append((folded(x) - model(x)).abs().max().item())
    row['reparam_max_abs_diff'] = max(diffs)
    row['bn_layers_before'] = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    row['bn_layers_after'] = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    if speed:
        row.update({f'reparam_{k}': v for k, v in reparam_speedup(model).items()})
    graphs, breaks = graph_breaks(model, torch.randn(2, 3, 224, 224))
    row.update(compile_graphs=graphs, compile_graph_breaks=breaks)
    with tempfile.TemporaryDirectory() as tmp:
        for label, m in (('onnx', model), ('onnx_reparam', folded)):
            path = export_onnx(m, Path(tmp) / f'{label}.onnx', exporter=exporter)
            row[f'{label}_max_abs_diff'] = onnx_max_abs_diff(m, path)
    row['onnx_exporter'] = exporter
    row['parity_shapes'] = [list(s) for s in PARITY_SHAPES]
    return row


def measure(names: Sequence[str], out: str | os.PathLike, exporter: str = 'torchscript') -> dict:
    """Run :func:`measure_model` for every name and write the results file."""

    rows = []
    for name in tqdm(names, desc='deploy checks', unit='model'):
        rows.append(measure_model(name, exporter=exporter))
        _log.info('%s', rows[-1])
    result = {'meta': machine_meta(), 'models': {r.pop('model'): r for r in rows}}
    write_json_atomic(out, result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')

    if args.measure is not None:
        measure(args.measure or hybrid_zoo.list_variants(), args.results, exporter='torchscript')
        print(f'wrote {args.results}')
        return 0
    kwargs = {} if args.num_classes is None else {'num_classes': args.num_classes}
    try:  # the checked loader: safetensors only, a config.json cannot choose the file (hybrid_zoo.factory)
        model = create_model(args.model, pretrained=args.pretrained, **kwargs).eval()
    except (ModelLoadError, PretrainedWeightsNotFoundError) as e:
        _log.error('hybrid-zoo export: %s', e)
        return 2
    if not args.no_reparam:
        model = reparameterize(model)
    in_chans = model.pretrained_cfg.get('input_size', (3,))[0] if hasattr(model, 'pretrained_cfg') else 3
    if args.int8:
        return _export_int8(model, args, in_chans)
    shapes = [(s[0], in_chans, *s[2:]) for s in PARITY_SHAPES]
    path = export_onnx(model, args.output, (in_chans, args.img_size, args.img_size), args.opset, args.exporter)
    diff = onnx_max_abs_diff(model, path, shapes)
    print(json.dumps({'onnx': str(path), 'max_abs_diff_vs_eager': diff, 'shapes': shapes}))
    return 0 if diff < 1e-4 else 1


def _export_int8(model: nn.Module, args, in_chans: int) -> int:
    """``export --int8``: fp32 ONNX, then ONNX Runtime static quantization calibrated on real images; with
    ``--evaluate-split`` the PT2E flow is priced beside it on the same images (it writes no file: see deploy)."""
    from hybrid_zoo.deploy import calibration_batches, has_vnni, int8_accuracy, quantize_onnx

    if not args.calibration_dataset:
        _log.error('--int8 needs --calibration-dataset DATASET: int8 ranges come from real images, not noise')
        return 2
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
        also = _pt2e_form(model, calibration, report)
        report.update(int8_accuracy(model, path, args.calibration_dataset, args.evaluate_split, also=also))
    print(json.dumps(report))
    if args.record:
        record_int8(args.record, model, {**report, 'onnx_int8': path.name}, source=args.model)
    return 0


def _pt2e_form(model: nn.Module, calibration: list, report: dict) -> dict:
    """The other int8 flow, PyTorch's PT2E (``deploy`` mode ``int8-pt2e``) on the same calibration images, as
    ``{'pt2e_': run}`` for :func:`~hybrid_zoo.deploy.int8_accuracy` to price beside the ONNX file (its figures:
    ``pt2e_int8_top1``, ``pt2e_top1_change``, ``pt2e_top1_agreement``); ``{}`` with ``report['pt2e_error']`` set
    where it cannot be built."""
    from hybrid_zoo.deploy import DeployError, build

    try:
        return {'pt2e_': build(model, 'int8-pt2e', calibration[0], calibration).run}
    except DeployError as e:
        report['pt2e_error'] = str(e)
        return {}


def record_int8(results: str | os.PathLike, model: nn.Module, report: dict, source: str) -> dict:
    """Add ``report`` to the results file ``results`` under ``model``'s architecture; other entries stay.

    ``source`` names the weights (a local folder is recorded by its name only: no local path is published).
    """
    results = Path(results)
    data = json.loads(results.read_text()) if results.exists() else {'models': {}}
    arch = (getattr(model, 'pretrained_cfg', None) or {}).get('architecture') or source
    if source.startswith('local-dir:'):
        source = 'local-dir:' + Path(source.split(':', 1)[1]).resolve().parent.name
    data['meta'] = machine_meta()
    data['models'][arch] = {**report, 'weights': source, 'date': data['meta'].get('date')}
    if arch in VARIANTS:
        data['models'][arch]['architecture_version'] = ARCH_VERSION
    write_json_atomic(results, data)
    return data


if __name__ == '__main__':
    raise SystemExit(main())
