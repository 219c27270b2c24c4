"""Deploy-time oneDNN post-op fusions for eager CPU inference: convolution + exact GELU, convolution + residual add.

``torch.compile`` with freezing fuses these itself; eager PyTorch runs each as its own pass over the activation.
PyTorch exposes oneDNN's fused convolutions as ``torch.ops.mkldnn._convolution_pointwise`` (a unary post-op such as
``gelu``) and its ``.binary`` overload (``add`` of a second tensor of the output's shape). The blocks'
``reparameterize()`` wraps their convolutions in :class:`ConvAct` / :class:`ConvAdd` when
:func:`pointwise_fusion_available` says the ops exist and agree with the plain path here. Each wrapper takes the fused
op only where it is exact and invisible: CPU, float32, no autograd, not while ``torch.compile``, ``torch.export``,
ONNX export or TorchScript trace, and no dispatch mode (FLOP counter, fake tensors) active; everywhere else it runs
the plain convolution and the pointwise op, so exported, compiled and counted models see ordinary ``aten`` ops.
"""

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import List, Optional  # noqa: UP035 - TorchScript reads these annotations

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ['ConvAct', 'ConvAdd', 'fusable', 'fusion_enabled', 'pointwise_fusion_available', 'unfused']

# set to 0 to keep reparameterize() from fusing (the plain folded model, for comparison or debugging)
ENV = 'HYBRID_ZOO_POINTWISE_FUSION'


@functools.cache
def pointwise_fusion_available() -> bool:
    """Whether oneDNN's pointwise-fused convolutions exist in this PyTorch and match the plain path (1e-5) here."""
    ops = getattr(torch.ops, 'mkldnn', None)
    if not torch.backends.mkldnn.is_available() or not hasattr(ops, '_convolution_pointwise'):
        return False
    try:
        g = torch.Generator().manual_seed(0)  # its own generator: the caller's random state is left alone
        w, b = torch.randn(16, 8, 1, 1, generator=g), torch.randn(16, generator=g)
        x = torch.randn(2, 8, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
        other = torch.randn(2, 16, 5, 5, generator=g).contiguous(memory_format=torch.channels_last)
        args = (w, b, [0, 0], [1, 1], [1, 1], 1)
        with torch.inference_mode():
            plain = F.conv2d(x, w, b)
            got_act = ops._convolution_pointwise(x, *args, 'gelu', [], 'none')
            got_add = ops._convolution_pointwise.binary(x, other, *args, 'add', None, None, [], None)
            ok_act = torch.allclose(got_act, F.gelu(plain), atol=1e-5, rtol=0)
            ok_add = torch.allclose(got_add, plain + other, atol=1e-5, rtol=0)
        return bool(ok_act and ok_add)
    except (RuntimeError, TypeError, AttributeError):  # an op or overload missing, or unsupported on this CPU
        return False


def fusion_enabled() -> bool:
    """Whether ``reparameterize()`` fuses: the ops work here and ``HYBRID_ZOO_POINTWISE_FUSION`` is not ``0``."""
    return os.environ.get(ENV, '1') != '0' and pointwise_fusion_available()


@contextlib.contextmanager
def unfused() -> Iterator[None]:
    """Within it, ``reparameterize()`` folds without fusing (each op stays its own module: profiles, A/Bs)."""
    before = os.environ.get(ENV)
    os.environ[ENV] = '0'
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ENV)
        else:
            os.environ[ENV] = before


@torch.jit.ignore  # TorchScript calls the fused ops as Python (it cannot look up an op overload)
def _conv_gelu(
    x: torch.Tensor,
    w: torch.Tensor,
    b: Optional[torch.Tensor],  # noqa: UP045 - TorchScript reads this annotation
    padding: List[int],  # noqa: UP006
    stride: List[int],  # noqa: UP006
    dilation: List[int],  # noqa: UP006
    groups: int,
) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, padding, stride, dilation, groups, 'gelu', [], 'none')


@torch.jit.ignore
def _conv_add(
    x: torch.Tensor,
    other: torch.Tensor,
    w: torch.Tensor,
    b: Optional[torch.Tensor],  # noqa: UP045
    padding: List[int],  # noqa: UP006
    stride: List[int],  # noqa: UP006
    dilation: List[int],  # noqa: UP006
    groups: int,
) -> torch.Tensor:
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, w, b, padding, stride, dilation, groups, 'add', None, None, [], None
    )


@torch.jit.ignore  # TorchScript calls it as Python
def fusable(x: torch.Tensor) -> bool:
    """Whether the fused op may run on ``x``: plain eager CPU float32 inference, nothing tracing or counting it."""
    return (
        x.device.type == 'cpu'
        and x.dtype == torch.float32
        and x.dim() == 4
        and not (torch.is_grad_enabled() and x.requires_grad)
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.jit.is_tracing()
        and not torch.jit.is_scripting()
        and not torch.onnx.is_in_onnx_export()
        and _get_current_dispatch_mode() is None
    )


class _FusedConv(nn.Module):
    """A conv and its geometry as the fused op takes it (lists and an int, which TorchScript passes through)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups


@register_notrace_module  # torch.fx keeps it one leaf: its branch reads the input's properties
class ConvAct(_FusedConv):
    """``act(conv(x))`` with ``act`` exact GELU, run as one oneDNN convolution with a GELU post-op where
    :func:`fusable`: (B, C_in, H, W) -> (B, C_out, H', W')."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fusable(x):
            return _conv_gelu(
                x, self.conv.weight, self.conv.bias, self.padding, self.stride, self.dilation, self.groups
            )
        return F.gelu(self.conv(x))


@register_notrace_module
class ConvAdd(_FusedConv):
    """``conv(x) + other`` (a residual), run as one oneDNN convolution with a sum post-op where :func:`fusable`:
    (B, C_in, H, W), (B, C_out, H', W') -> (B, C_out, H', W')."""

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        if fusable(x) and other.shape[0] == x.shape[0] and other.dtype == x.dtype:
            w, b = self.conv.weight, self.conv.bias
            return _conv_add(x, other, w, b, self.padding, self.stride, self.dilation, self.groups)
        return self.conv(x) + other


def is_exact_gelu(act: nn.Module) -> bool:
    """Whether ``act`` is the erf GELU that oneDNN's ``gelu`` post-op computes (torch's or timm's module)."""
    from timm.layers.activations import GELU as TimmGELU

    return (type(act) is nn.GELU and act.approximate == 'none') or type(act) is TimmGELU
