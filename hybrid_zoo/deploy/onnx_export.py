"""ONNX: export with dynamic batch, height and width, an ONNX Runtime session, and parity with eager PyTorch."""

from __future__ import annotations

import importlib.util
import inspect
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..logs import VERBOSE, verbosity

PARITY_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 224, 224), (2, 3, 193, 250), (3, 3, 96, 96))


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
                verbose=verbosity() >= VERBOSE,  # else its '[torch.onnx] ...' steps go to stdout, the result's stream
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

    run = ort_session(onnx_path, threads=None)
    worst = 0.0
    model = model.eval()
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)
        got = run(x)
        worst = max(worst, (got - expected).abs().max().item())
    return worst


def ort_session(path: str | os.PathLike, threads: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``path`` run by ONNX Runtime's CPU provider with every graph optimization on: a function from a float batch
    ``(B, C, H, W)`` to logits, as torch tensors. ``threads``: intra-op threads (None: ONNX Runtime's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {'pixel_values': x.contiguous().numpy()})[0])

    return run
