"""CPU deployment modes: how users serve a classifier, each built from one eval model and checked against eager.

``build(model, mode, example, calibration)`` returns a :class:`Deployed`: a callable taking a float batch
``(B, C, H, W)`` and returning logits ``(B, num_classes)`` as a torch tensor, with its build time and its largest
absolute logit difference from eager PyTorch on ``example``. Modes:

- ``eager``: the model as given (fold it first: ``timm.models.reparameterize_model``), channels_last.
- ``compiled``: ``torch.compile`` (inductor) with ``torch._inductor.config.freezing = True`` under
  ``inference_mode``: weights become constants, so BatchNorm, GELU and residual adds fuse into oneDNN convolutions
  as post-ops. Build time = the first call (compilation).
- ``onnxruntime``: the model exported to ONNX (:func:`~hybrid_zoo.deploy.onnx_export.export_onnx`) and run by
  ONNX Runtime's CPU execution provider with every graph optimization on and its intra-op threads set to torch's.
- ``int8``: post-training static quantization by ONNX Runtime (QDQ format, int8 weights per channel, uint8
  activations, MinMax calibration on ``calibration`` batches of real images), run by ONNX Runtime like the fp32
  export; ``hybrid-zoo export --int8`` writes this file.
- ``int8-pt2e``: PyTorch's PT2E flow (torchao's ``X86InductorQuantizer``, same scheme, same calibration batches),
  compiled by inductor with freezing. Faster than ``int8`` on all but one model benchmarked here
  (``docs/deployment.md``), but it lives in the process that built it: its only file form, a ``.pt2`` archive, may
  hold tensors that ``torch.export.load`` unpickles with ``weights_only=False``, and it needs torchao, inductor and a
  C++ compiler where it runs.

A mode that fails to build raises :class:`DeployError` with the reason; the benchmark lists it, it does not drop it.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hybrid_zoo_config.deploy import MODES

from .errors import DeployError
from .int8 import pt2e_int8, quantize_onnx
from .onnx_export import export_onnx, ort_session


@dataclass
class Deployed:
    """One deployed form: ``run`` maps a float batch (B, C, H, W) to logits (B, num_classes)."""

    mode: str
    run: Callable[[torch.Tensor], torch.Tensor]
    build_s: float
    max_abs_diff: float
    file_mb: float | None = None  # size of the deployed file (ONNX modes)


def build(
    model: nn.Module,
    mode: str,
    example: torch.Tensor,
    calibration: Sequence[torch.Tensor] = (),
    threads: int | None = None,
    work_dir: str | os.PathLike | None = None,
) -> Deployed:
    """``model`` (eval, folded) deployed as ``mode``, checked against eager on ``example`` (B, C, H, W).

    Raises:
        ValueError: an unknown mode, or int8 without calibration batches.
        DeployError: the mode cannot be built for this model (the reason is in the message).
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    if mode.startswith('int8') and not calibration:
        raise ValueError(f'{mode} needs calibration batches of real (normalized) images, got none')
    threads = threads or torch.get_num_threads()
    model = model.eval().to(memory_format=torch.channels_last)
    example = example.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = model(example)
    t0 = time.perf_counter()
    file_mb = None
    try:
        if mode == 'eager':

            def run(x: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return model(x.contiguous(memory_format=torch.channels_last))

        elif mode == 'compiled':
            import torch._inductor.config as inductor_config

            with inductor_config.patch(freezing=True):
                compiled = torch.compile(model)
                with torch.inference_mode():
                    compiled(example)  # compiles (with freezing) now, so build_s is the compile time

            def run(x: torch.Tensor) -> torch.Tensor:
                with torch.inference_mode():
                    return compiled(x.contiguous(memory_format=torch.channels_last))

        elif mode == 'int8-pt2e':
            run = pt2e_int8(model, example, calibration)
        else:
            folder = Path(work_dir or tempfile.mkdtemp(prefix='hz-deploy-'))
            folder.mkdir(parents=True, exist_ok=True)
            path = export_onnx(
                model.to(memory_format=torch.contiguous_format), folder / 'model.onnx', tuple(example.shape[1:])
            )
            model.to(memory_format=torch.channels_last)
            if mode == 'int8':
                path = quantize_onnx(path, folder / 'model.int8.onnx', calibration)
            file_mb = path.stat().st_size / 1e6
            run = ort_session(path, threads)
        got = run(example)
    except (ValueError, DeployError):
        raise
    except Exception as e:  # a compiler or exporter failure for this model: say which, keep the rest going
        reason = (re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines() or [''])[0][:300]  # no colour codes
        raise DeployError(f'{mode} failed: {type(e).__name__}: {reason}') from e
    build_s = time.perf_counter() - t0
    diff = (got.float() - expected.float()).abs().max().item()
    return Deployed(mode, run, build_s, diff, file_mb)
