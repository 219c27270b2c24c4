"""What ``hybrid-zoo export --measure`` and ``--record`` write: folding parity and speed, ``torch.compile`` graph
breaks and ONNX parity for many models (``deploy.json``), and int8 reports by architecture (``int8-fmnist.json``)."""

from __future__ import annotations

import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import timm
import torch
from torch import nn

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.results import machine_meta
from hybrid_zoo.deploy import PARITY_SHAPES, export_onnx, graph_breaks, onnx_max_abs_diff, reparameterize
from hybrid_zoo.logs import progress
from hybrid_zoo.models.variants import ARCH_VERSION, VARIANTS

_log = logging.getLogger(__name__)


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
    for name in progress(names, desc='deploy checks', unit='model'):
        rows.append(measure_model(name, exporter=exporter))
        _log.info('%s', rows[-1])
    result = {'meta': machine_meta(), 'models': {r.pop('model'): r for r in rows}}
    write_json_atomic(out, result)
    return result


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
