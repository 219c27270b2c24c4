"""CPU deployment modes: how users serve a classifier, each built from one eval model and checked against eager.

``build(model, mode, example, calibration)`` returns a :class:`Deployed`: a callable taking a float batch
``(B, C, H, W)`` and returning logits ``(B, num_classes)`` as a torch tensor, with its build time and its largest
absolute logit difference from eager PyTorch on ``example``. Modes:

- ``eager``: the model as given (fold it first: ``timm.models.reparameterize_model``), channels_last.
- ``compiled``: ``torch.compile`` (inductor) with ``torch._inductor.config.freezing = True`` under
  ``inference_mode``: weights become constants, so BatchNorm, GELU and residual adds fuse into oneDNN convolutions
  as post-ops. Build time = the first call (compilation).
- ``onnxruntime``: the model exported to ONNX (``hybrid_zoo.export.export_onnx``, torch.export-based) and run by
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

import copy
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

MODES = ('eager', 'compiled', 'onnxruntime', 'int8', 'int8-pt2e')


class DeployError(RuntimeError):
    """A deployment mode could not be built for a model; the message says which and why."""


@dataclass
class Deployed:
    mode: str
    run: Callable[[torch.Tensor], torch.Tensor]
    build_s: float
    max_abs_diff: float
    file_mb: float | None = None  # size of the deployed file (ONNX modes)


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {'pixel_values': x.contiguous().numpy()})[0])

    return run


class _Calibration:
    """ONNX Runtime's ``CalibrationDataReader`` over torch batches."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self._it = iter([{'pixel_values': b.contiguous().numpy().astype(np.float32)} for b in batches])

    def get_next(self):
        return next(self._it, None)


def has_vnni() -> bool:
    """Whether this CPU has VNNI (AVX512-VNNI or AVX-VNNI), which ONNX Runtime's u8s8 int8 kernels need on x86 to
    avoid saturating the int16 sums of pairs of products; True off x86 and where ``/proc/cpuinfo`` cannot be read."""
    if platform.machine().lower() not in ('x86_64', 'amd64', 'i386', 'i686'):
        return True
    try:
        return 'vnni' in Path('/proc/cpuinfo').read_text()
    except OSError:
        return True


def quantize_onnx(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    calibration: Iterable[torch.Tensor],
    reduce_range: bool | None = None,
) -> Path:
    """Static int8 quantization (QDQ, per-channel int8 weights, uint8 activations) of an fp32 ONNX file.

    ``reduce_range`` (7-bit weights) defaults to True on an x86 CPU without VNNI, where ONNX Runtime's documentation
    recommends it: there its u8s8 kernels add pairs of products in int16, which full-range weights can saturate.
    Writes ``dst`` only when complete (a temporary sibling, then a rename).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        pre = Path(tmp) / 'pre.onnx'
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        out = Path(tmp) / 'int8.onnx'
        quantize_static(
            str(pre),
            str(out),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=(not has_vnni()) if reduce_range is None else reduce_range,
        )
        os.replace(out, dst)
    return dst


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
            run = _pt2e_int8(model, example, calibration)
        else:
            from hybrid_zoo.export import export_onnx

            folder = Path(work_dir or tempfile.mkdtemp(prefix='hz-deploy-'))
            folder.mkdir(parents=True, exist_ok=True)
            path = export_onnx(
                model.to(memory_format=torch.contiguous_format), folder / 'model.onnx', tuple(example.shape[1:])
            )
            model.to(memory_format=torch.channels_last)
            if mode == 'int8':
                path = quantize_onnx(path, folder / 'model.int8.onnx', calibration)
            file_mb = path.stat().st_size / 1e6
            run = _ort_session(path, threads)
        got = run(example)
    except (ValueError, DeployError):
        raise
    except Exception as e:  # a compiler or exporter failure for this model: say which, keep the rest going
        reason = (re.sub(r'\x1b\[[0-9;]*m', '', str(e)).strip().splitlines() or [''])[0][:300]  # no colour codes
        raise DeployError(f'{mode} failed: {type(e).__name__}: {reason}') from e
    build_s = time.perf_counter() - t0
    diff = (got.float() - expected.float()).abs().max().item()
    return Deployed(mode, run, build_s, diff, file_mb)


def three_channel_copy(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """For a model whose first convs read one channel: a copy reading three (each such conv's weights repeated and
    divided by three) and the input transform to feed it (the image three times), so ``copy(expand(x)) == model(x)``;
    any other model comes back as it is, with the identity."""
    convs = input_convs(model)
    if not convs or any(c.in_channels != 1 for c in convs.values()):
        return model, lambda x: x
    net = copy.deepcopy(model)
    for name in convs:
        wide = net.get_submodule(name)
        wide.weight = nn.Parameter(wide.weight.detach().repeat(1, 3, 1, 1) / 3)
        wide.in_channels = 3
    if getattr(net, 'in_chans', None) == 1:
        net.in_chans = 3  # timm's attribute, which our models check their input against
    return net, lambda x: x.expand(-1, 3, -1, -1)


def input_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The dense convs that read the image, found from ``pretrained_cfg['first_conv']`` (one name or several: FastViT
    and MobileOne train parallel branches on the input).

    A name that reparameterization folded away (``stem.0.conv_kxk.0.conv`` becomes ``stem.0.reparam_conv``) is
    looked up through its parents: the nearest one that still exists, other than the model itself, contributes its
    dense convs with the same input width as the model.
    """
    names = dict(model.named_modules())
    first = getattr(model, 'pretrained_cfg', {}).get('first_conv') or ()
    out: dict[str, nn.Conv2d] = {}
    for name in (first,) if isinstance(first, str) else tuple(first):
        parts = name.split('.')
        while parts and '.'.join(parts) not in names:
            parts.pop()
        if not parts:
            continue
        found = '.'.join(parts)
        if isinstance(names[found], nn.Conv2d):
            out[found] = names[found]
            continue
        in_chans = getattr(model, 'in_chans', None)
        for sub, m in names[found].named_modules(prefix=found):
            if isinstance(m, nn.Conv2d) and m.groups == 1 and (in_chans is None or m.in_channels == in_chans):
                out[sub] = m
    return out


def _pt2e_int8(model: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]):
    """``model`` quantized by PyTorch's PT2E flow (torchao's ``X86InductorQuantizer``, its default static config:
    per-channel int8 weights, uint8 activations, MinMax observers on ``calibration``), then compiled by inductor with
    freezing, which lowers the quantized convolutions and linears to oneDNN; dynamic batch. Compiles on the call on
    ``example``, so the build time includes it.

    A one-channel model is quantized as its :func:`three_channel_copy` (the same fp32 function, and the same int8
    one, since per-channel weight scales divide by three too): inductor's quantized graph for a one-channel input
    fails its own stride checks (torch 2.14.1, torchao 0.18).
    """
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as e:
        raise DeployError(f'int8-pt2e needs torchao, which is not installed (pip install torchao): {e}') from e
    import torch._inductor.config as inductor_config

    model, expand = three_channel_copy(model)
    example, calibration = expand(example), [expand(x) for x in calibration]
    batch = torch.export.Dim('batch', min=1, max=4096)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for x in calibration:
            prepared(x.contiguous(memory_format=torch.channels_last))
    compiled = torch.compile(convert_pt2e(prepared), dynamic=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True), torch.no_grad():
            return compiled(expand(x).contiguous(memory_format=torch.channels_last))

    return run


def _eval_loader(model: nn.Module, dataset: str, split: str, samples: int | None, batch_size: int = 64):
    """Batches of ``split`` of ``dataset`` as the model sees them at evaluation (its data config, eval transform)."""
    from timm.data import create_transform

    from hybrid_zoo.train.data import ImageClassificationDataset, load_eval_split, model_data_config

    part, _, name = load_eval_split(dataset, split, max_samples=samples, seed=0)
    data_cfg = model_data_config(model)
    ds = ImageClassificationDataset(part, create_transform(**data_cfg), data_cfg['input_size'][0], name)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)


def calibration_batches(model: nn.Module, dataset: str, split: str = 'train', samples: int = 256) -> list[torch.Tensor]:
    """``samples`` images (a seeded random subset) of ``split``, transformed for ``model``: int8 calibration data."""
    return [x for x, _ in _eval_loader(model, dataset, split, samples, batch_size=32)]


def compare_accuracy(
    model: nn.Module,
    runs: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
    dataset: str,
    split: str = 'test',
    samples: int | None = None,
) -> dict:
    """Top-1 (%) of the fp32 eager model and of each deployed form of it in ``runs`` on ``split``, in one pass over
    the data, and how often each form's top-1 class agrees with fp32's. ``runs`` maps a key prefix to a form: its
    figures are ``<prefix>int8_top1``, ``<prefix>top1_change`` and ``<prefix>top1_agreement``."""
    model = model.eval()
    fp32, correct, agree, total = 0, dict.fromkeys(runs, 0), dict.fromkeys(runs, 0), 0
    for x, y in _eval_loader(model, dataset, split, samples):
        with torch.inference_mode():
            a = model(x).argmax(1)
        fp32 += int((a == y).sum())
        total += len(y)
        for prefix, run in runs.items():
            b = run(x).argmax(1)
            correct[prefix] += int((b == y).sum())
            agree[prefix] += int((a == b).sum())
    out = {'split': split, 'images': total, 'fp32_top1': round(100 * fp32 / total, 3)}
    for p in runs:
        out[f'{p}int8_top1'] = round(100 * correct[p] / total, 3)
        out[f'{p}top1_change'] = round(100 * (correct[p] - fp32) / total, 3)
        out[f'{p}top1_agreement'] = round(100 * agree[p] / total, 3)
    return out


def int8_accuracy(
    model: nn.Module,
    int8_onnx: str | os.PathLike,
    dataset: str,
    split: str = 'test',
    samples: int | None = None,
    also: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> dict:
    """Top-1 (%) of the fp32 eager model and of its int8 ONNX on ``split``, and how often their top-1 classes agree;
    ``also`` (key prefix -> run): other deployed forms priced in the same pass (see :func:`compare_accuracy`)."""
    ort = _ort_session(Path(int8_onnx), torch.get_num_threads())
    return compare_accuracy(model, {'': ort, **(also or {})}, dataset, split, samples)
