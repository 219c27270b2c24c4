"""Kernel-level speed levers the profile points at, each timed against what the models use.

Every lever computes the same function as the op it would replace, so none of them costs accuracy; the
question is only whether it is faster on this CPU (fp32, channels_last, glibc trimming off, one process):

- attention: ``F.scaled_dot_product_attention`` against explicit ``softmax(q k^T) v`` matmuls, at the
  models' shapes (head dim 32; stride 8 with keys/values pooled 2x, stride 16, stride 32);
- activation: exact GELU against the tanh approximation (and ReLU as the floor of an elementwise op);
- GEMM in training: a 1x1 conv (oneDNN) against ``F.linear`` on the channels_last memory (MKL), forward and
  both gradients;
- depthwise conv in training: channels_last against NCHW, and the forward against the weight gradient.

Writes ``runs/kernel-levers.json`` (``--out model_cards/results/kernel-levers.json``: the committed file)::

    python tools/kernel_levers.py
"""

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hybrid_zoo.benchmarks.speed import exec_with_no_trim  # noqa: E402
from hybrid_zoo_config.results import tool_parser  # noqa: E402

ARGS = tool_parser(__doc__, 'kernel-levers.json').parse_args()  # --help answers before anything is measured
exec_with_no_trim(sys.argv)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hybrid_zoo.atomic import write_json_atomic  # noqa: E402
from hybrid_zoo.benchmarks.profile_ops import median_seconds  # noqa: E402
from hybrid_zoo.benchmarks.results import machine_meta  # noqa: E402

CL = torch.channels_last
ITERS = 7


def _seconds(fn) -> float:
    return median_seconds(fn, ITERS, warmup=3)


def _row(lever: str, flop: float, used_s: float, lever_s: float) -> dict:
    """One timed lever: the GFLOP/s of what the models use and of the lever, and the lever's speed-up."""
    return {
        'lever': lever,
        'used_gflop_s': round(flop / used_s / 1e9, 1),
        'lever_gflop_s': round(flop / lever_s / 1e9, 1),
        'speedup': round(used_s / lever_s, 2),
    }


def _explicit_attention(q, k, v):
    return ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1) @ v


def attention() -> list[dict]:
    rows = []
    # (what, batch, channels, query tokens, key tokens): convformer_small's attention stages at 224 px
    for what, b, c, n, m in (('stride 8, K/V pooled 2x', 32, 128, 784, 196), ('stride 16', 32, 320, 196, 196),
                             ('stride 32', 32, 512, 49, 49)):  # fmt: skip
        heads = c // 32
        q, k, v = (torch.randn(b, t, heads, 32).transpose(1, 2) for t in (n, m, m))  # views of a (B, N, C) map
        flop = 4 * b * heads * n * m * 32
        with torch.inference_mode():
            torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v), _explicit_attention(q, k, v))
            sdpa = _seconds(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v))
            explicit = _seconds(lambda q=q, k=k, v=v: _explicit_attention(q, k, v))
        rows.append(_row(f'attention {what}: explicit matmuls instead of SDPA', flop, sdpa, explicit))
    return rows


def activation() -> list[dict]:
    x = torch.randn(32, 1280, 14, 14).contiguous(memory_format=CL)  # convformer_small's stage-3 FFN hidden map
    with torch.inference_mode():
        exact = _seconds(lambda: F.gelu(x))
        out = []
        for name, fn in (('tanh GELU', lambda: F.gelu(x, approximate='tanh')), ('ReLU', lambda: F.relu(x))):
            out.append(
                {'lever': f'activation: {name} instead of exact GELU', 'speedup': round(exact / _seconds(fn), 2)}
            )
    out[-1]['note'] = 'a different function: the floor an elementwise op could reach, not a drop-in'
    return out


def training_gemm() -> list[dict]:
    rows = []
    for c, o, hw in ((64, 256, 56), (128, 512, 28), (320, 1280, 14), (1280, 320, 14), (512, 2048, 7)):
        x = torch.randn(16, c, hw, hw).contiguous(memory_format=CL).requires_grad_()
        w = torch.randn(o, c, 1, 1).contiguous(memory_format=CL).requires_grad_()
        bias = torch.randn(o, requires_grad=True)
        grad = torch.randn(16, o, hw, hw).contiguous(memory_format=CL)
        flop = 3 * 2 * 16 * hw * hw * c * o  # forward, input and weight gradients

        def conv(x=x, w=w, bias=bias, grad=grad):
            F.conv2d(x, w, bias).backward(grad)

        def linear(x=x, w=w, bias=bias, grad=grad):  # the same GEMM on the (B, H, W, C) view of the memory
            F.linear(x.permute(0, 2, 3, 1), w.flatten(1), bias).permute(0, 3, 1, 2).backward(grad)

        lever = f'training GEMM {c}->{o} at {hw}x{hw}: F.linear (MKL) instead of a 1x1 conv (oneDNN)'
        rows.append(_row(lever, flop, _seconds(conv), _seconds(linear)))
    return rows


def depthwise() -> list[dict]:
    rows = []
    for c, hw, k in ((64, 56, 7), (320, 14, 7), (1280, 14, 3)):
        flop = 2 * 16 * c * hw * hw * k * k
        rates = {}
        for layout, fmt in (('channels_last', CL), ('NCHW', torch.contiguous_format)):
            x = torch.randn(16, c, hw, hw).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(c, 1, k, k).contiguous(memory_format=fmt).requires_grad_()
            grad = torch.randn(16, c, hw, hw).contiguous(memory_format=fmt)
            with torch.no_grad():
                fwd = _seconds(lambda x=x, w=w, k=k, c=c: F.conv2d(x, w, padding=k // 2, groups=c))
            d_w = _seconds(
                lambda x=x, w=w, k=k, c=c, grad=grad: torch.autograd.grad(
                    F.conv2d(x.detach(), w, padding=k // 2, groups=c), w, grad
                )
            )
            rates[layout] = {'forward': flop / fwd / 1e9, 'weight_grad': flop / max(d_w - fwd, 1e-9) / 1e9}
        rows.append(
            {
                'lever': f'depthwise {k}x{k}, {c} channels at {hw}x{hw}: NCHW instead of channels_last',
                'used_gflop_s': round(rates['channels_last']['forward'], 1),
                'used_weight_grad_gflop_s': round(rates['channels_last']['weight_grad'], 1),
                'lever_gflop_s': round(rates['NCHW']['forward'], 1),
                'lever_weight_grad_gflop_s': round(rates['NCHW']['weight_grad'], 1),
                'speedup': round(
                    (1 / rates['channels_last']['forward'] + 1 / rates['channels_last']['weight_grad'])
                    / (1 / rates['NCHW']['forward'] + 1 / rates['NCHW']['weight_grad']),
                    2,
                ),
            }
        )
    return rows


def main() -> int:
    torch.manual_seed(0)
    start = time.perf_counter()
    rows = attention() + activation() + training_gemm() + depthwise()
    out = {
        'meta': dict(machine_meta(), allocator='no-trim', iters=ITERS),
        'note': 'speedup > 1: the lever is faster than what the models use (same function, same layout)',
        'levers': rows,
        'faster_than_used': [r['lever'] for r in rows if r['speedup'] > 1.05 and 'note' not in r],
        'wall_s': round(time.perf_counter() - start, 1),
    }
    write_json_atomic(ARGS.out, out)
    for r in rows:
        print(f'{r["speedup"]:5.2f}x  {r["lever"]}')
    print('median speedup:', statistics.median(r['speedup'] for r in rows))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
