"""``hybrid-zoo describe``: the architecture of one model, part by part, with the tensor shape after each part.

Answers the question people ask of every hybrid model ("what is the shape where, and what does each part
cost?") from the model itself: the stem, each stage (its kind of block, how many, how wide), the head; for a
given input the output shape of each, and its parameters and GMACs (attention counted, see ``flops.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import timm
import torch
from torch import nn

from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo.layers import AttnBlock
from hybrid_zoo_config.describe import MAX_IMG_SIZE, MAX_IN_CHANS, MIN_IMG_SIZE


@dataclass(frozen=True)
class Part:
    """One row of the description: a named part of the network and what it does to the input."""

    name: str
    what: str
    shape: tuple[int, ...]  # output shape at batch 1
    params_m: float
    gmacs: float
    attention_gmacs: float


def _what(name: str, module: nn.Module, width: int) -> str:
    blocks = getattr(module, 'blocks', None)
    if blocks is None:
        return {'stem': 'conv 3x3 s2 -> BN -> GELU -> conv 3x3 s2 -> BN', 'head': 'avg pool -> LayerNorm -> Linear'}[
            name
        ]
    attention = sum(isinstance(b, AttnBlock) for b in blocks)
    down = '' if isinstance(module.downsample, nn.Identity) else 'conv 3x3 s2 + BN, then '
    if 0 < attention < len(blocks):
        return f'{down}{len(blocks)} blocks: {attention} attention alternating with {len(blocks) - attention} conv, width {width}'
    kind = 'attention' if attention else 'conv'
    return f'{down}{len(blocks)} {kind} block{"s" if len(blocks) > 1 else ""}, width {width}'


@torch.no_grad()
def describe(model_name: str, img_size: tuple[int, int] = (224, 224), in_chans: int = 3) -> list[Part]:
    """The parts of ``model_name`` (a registered ConvFormer name) for a ``(1, in_chans, *img_size)`` input.

    Raises:
        ValueError: ``img_size`` outside 32 to 1,024 px or ``in_chans`` outside 1 to 64 (checked before anything is
            built: a forward pass at 20,000 px would allocate gigabytes).
    """
    sides = tuple(img_size)
    if len(sides) != 2 or not all(isinstance(s, int) and MIN_IMG_SIZE <= s <= MAX_IMG_SIZE for s in sides):
        raise ValueError(f'expected height and width from {MIN_IMG_SIZE} to {MAX_IMG_SIZE} px, got {img_size}')
    if not isinstance(in_chans, int) or not 1 <= in_chans <= MAX_IN_CHANS:
        raise ValueError(f'expected in_chans from 1 to {MAX_IN_CHANS}, got {in_chans}')
    model = timm.create_model(model_name, in_chans=in_chans).eval()
    parts = [('stem', model.stem), *((f'stage {i + 1}', s) for i, s in enumerate(model.stages)), ('head', model.head)]
    x = torch.zeros(1, in_chans, *img_size)
    model(x)  # the model's own input check: a too small or malformed input fails here, with its ValueError
    rows = []
    for name, module in parts:
        macs = count_macs(module, tuple(x.shape[1:]))
        x = module(x)
        rows.append(
            Part(
                name,
                _what(name, module, x.shape[1]),
                tuple(x.shape),
                count_params(module) / 1e6,
                macs.gmacs,
                macs.attention_gmacs,
            )
        )
    return rows


def format_table(model_name: str, rows: Sequence[Part], img_size: tuple[int, int], in_chans: int) -> str:
    """A fixed-width table of ``rows``, with a total line, as ``hybrid-zoo describe`` prints it."""
    header = f'{model_name}: input (1, {in_chans}, {img_size[0]}, {img_size[1]})'
    lines = [header, f'{"part":8s}  {"output shape":20s}  {"params (M)":>10s}  {"GMACs (attn)":>15s}  blocks']
    for r in rows:
        shape = '(' + ', '.join(map(str, r.shape)) + ')'
        macs = f'{r.gmacs:.3f} ({r.attention_gmacs:.3f})'
        lines.append(f'{r.name:8s}  {shape:20s}  {r.params_m:10.2f}  {macs:>15s}  {r.what}')
    total = f'{sum(r.gmacs for r in rows):.3f} ({sum(r.attention_gmacs for r in rows):.3f})'
    lines.append(f'{"total":8s}  {"":20s}  {sum(r.params_m for r in rows):10.2f}  {total:>15s}')
    return '\n'.join(lines)
