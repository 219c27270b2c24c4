"""The two int8 flows: ONNX Runtime's static quantization (QDQ) of an fp32 ONNX file, and PyTorch's PT2E flow
(torchao's x86 inductor quantizer) compiled by inductor. Both take calibration batches of real, normalized images
from the caller; neither reads data itself."""

from __future__ import annotations

import copy
import os
import platform
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..logs import progress
from ..normalization import LUMA_WEIGHTS
from .errors import DeployError


class _Calibration:
    """ONNX Runtime's ``CalibrationDataReader`` over torch batches."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        feeds = [{'pixel_values': b.contiguous().numpy().astype(np.float32)} for b in batches]
        self._it = iter(progress(feeds, desc='int8 calibration', unit='batch'))  # ONNX Runtime runs one per call

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


def three_channel_copy(model: nn.Module) -> tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """For a model whose first convs read one channel: a copy reading three (each such conv's weights repeated,
    times the luma weights, which add up to 1) and the input transform to feed it (the image three times), so
    ``copy(expand(x)) == model(x)``, and for an RGB ``x`` the copy computes what the model does with its luma; any
    other model comes back as it is, with the identity."""
    convs = input_convs(model)
    if not convs or any(c.in_channels != 1 for c in convs.values()):
        return model, lambda x: x
    net = copy.deepcopy(model)
    for name in convs:
        wide = net.get_submodule(name)
        luma = torch.tensor(LUMA_WEIGHTS, dtype=wide.weight.dtype).view(1, 3, 1, 1)
        wide.weight = nn.Parameter(wide.weight.detach().repeat(1, 3, 1, 1) * luma)
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


def pt2e_int8(model: nn.Module, example: torch.Tensor, calibration: Sequence[torch.Tensor]):
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
        for x in progress(calibration, desc='int8 calibration (PT2E)', unit='batch'):
            prepared(x.contiguous(memory_format=torch.channels_last))
    compiled = torch.compile(convert_pt2e(prepared), dynamic=True)

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True), torch.no_grad():
            return compiled(expand(x).contiguous(memory_format=torch.channels_last))

    return run
