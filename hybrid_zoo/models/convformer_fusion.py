"""Registration of the nine ConvFormer fusion models in timm: the only code that touches timm's registry.

timm keys a model by its entrypoint's function name and files it under this module's basename
(``timm.list_models(module='convformer_fusion')``); ``default_cfgs`` must exist before registration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from ..normalization import for_channels
from .model import ConvFormerFusion, has_attention
from .pretrained import check_weights_reachable, keep_untagged_default, pretrained_tags
from .variants import ARCH_VERSION, VARIANTS, ConvFormerCfg

__all__ = ['MODEL_NAMES', 'checkpoint_filter_fn', 'default_cfgs']

MODEL_NAMES: tuple[str, ...] = tuple(VARIANTS)


def _cfg(**kwargs) -> dict:
    return {
        'num_classes': 1000,
        'input_size': (3, 224, 224),
        'pool_size': (7, 7),
        'crop_pct': 0.95,
        'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0.conv',
        'classifier': 'head.fc',
        'license': 'apache-2.0',
        'origin_url': 'https://github.com/hybrid-zoo/hybrid_zoo',
        **kwargs,
    }


# Every architecture has an untagged, weightless ImageNet-shaped entry (the default: create_model('name'));
# each published weight adds 'name.tag': _cfg(hf_hub_id='<org>/<name>.<tag>', ...) (see pretrained.py).
default_cfgs = generate_default_cfgs(
    {**{name: _cfg() for name in VARIANTS}, **{key: _cfg(**cfg) for key, cfg in pretrained_tags().items()}}
)
keep_untagged_default(default_cfgs)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: ConvFormerFusion) -> Mapping[str, Any]:
    """Map a checkpoint onto ``model``'s parameter names before timm loads it, or refuse it.

    A training checkpoint wrapped as ``{'state_dict': ...}`` or ``{'model': ...}`` is unwrapped. The checkpoint's
    block layout (which blocks of which stage have attention) must be ``model``'s: weights of another architecture
    version (v1 weights, published before architecture v2, have attention in every block of the attention stages)
    are refused with the kwargs that build their architecture, never loaded into changed modules. This is also the
    single place where a future rename of a module maps the names of already published weights to the new ones
    (as timm's ``checkpoint_filter_fn`` of each model file does), so old repos keep loading.

    Args:
        state_dict: The loaded checkpoint, possibly wrapped.
        model: The freshly built model the weights are for.

    Returns:
        The state dict with the model's parameter names.

    Raises:
        ValueError: The checkpoint's blocks are not ``model``'s.
    """
    for key in ('state_dict', 'model'):
        if isinstance(state_dict.get(key), Mapping):
            state_dict = state_dict[key]
            break
    have, want = block_layout(state_dict), block_layout(model.state_dict())
    if have and have != want:
        raise ValueError(
            f'these weights do not fit {type(model).__name__} as built: the checkpoint has {_describe(have)}, the '
            f'model has {_describe(want)}. Architecture v{ARCH_VERSION} has attention in every second block of '
            f'the attention stages; weights of another version load into the architecture they were trained with: pass '
            f'{_kwargs_for(have)} to timm.create_model'
        )
    return state_dict


def block_layout(state_dict: Mapping[str, Any]) -> tuple[str, ...]:
    """Per stage, one letter per block: ``a`` (attention block) or ``c`` (conv block), from parameter names."""
    kinds: dict[int, dict[int, str]] = {}
    for key in state_dict:
        m = re.match(r'stages\.(\d+)\.blocks\.(\d+)\.(\w+)', key)
        if m:
            stage, block = kinds.setdefault(int(m[1]), {}), int(m[2])
            stage[block] = 'a' if m[3] in ('attn', 'cpe') or stage.get(block) == 'a' else 'c'
    return tuple(''.join(blocks[i] for i in sorted(blocks)) for _, blocks in sorted(kinds.items()))


def _describe(layout: tuple[str, ...]) -> str:
    return (
        'depths '
        + '-'.join(str(len(s)) for s in layout)
        + ' with attention in blocks '
        + ' | '.join(','.join(str(i) for i, k in enumerate(s) if k == 'a') or '-' for s in layout)
    )


def _kwargs_for(layout: tuple[str, ...]) -> str:
    depths = tuple(len(s) for s in layout)
    for every in range(1, max(depths) + 1):  # the attn_every that gives this layout, if any
        if all(s == _layout(len(s), 'a' in s, every) for s in layout):
            return f'depths={depths}, attn_every={every}'
    return f'depths={depths} and the attention placement of the weights'


def _layout(depth: int, attention: bool, every: int) -> str:
    return ''.join('a' if has_attention(i, depth, attention, every) else 'c' for i in range(depth))


def _create(variant: str, pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        check_weights_reachable(cfg.to_dict(), cache_dir=kwargs.get('cache_dir'))
    model = build_model_with_cfg(
        ConvFormerFusion,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )
    # timm's save_for_hf writes its factory's record of the model's args (``_model_args``, which create_model
    # completes with the caller's kwargs) as config.json's model_args: with the whole architecture in it, a published
    # config rebuilds what was trained, also under a later architecture version
    arch = {
        k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items() if k in ConvFormerCfg.__dataclass_fields__
    }
    model._model_args = {**arch, **getattr(model, '_model_args', {})}
    model.pretrained_cfg = model.default_cfg = _cfg_for_channels(model.pretrained_cfg, model.in_chans)
    return model


def _cfg_for_channels(cfg: dict, in_chans: int) -> dict:
    """``cfg`` with ``input_size``, ``mean`` and ``std`` for ``in_chans`` channels.

    timm's ``resolve_data_config`` reads them as they stand, so a model built with ``in_chans=1`` from a 3-channel
    cfg would get a 3-channel transform that fails on its own (grayscale) images (:func:`for_channels`).
    """
    if cfg['input_size'][0] == in_chans and len(cfg['mean']) == len(cfg['std']) == in_chans:
        return cfg
    return {
        **cfg,
        'input_size': (in_chans, *cfg['input_size'][1:]),
        'mean': for_channels(cfg['mean'], in_chans),
        'std': for_channels(cfg['std'], in_chans),
    }


def _create_variant(name: str, pretrained: bool, **kwargs) -> ConvFormerFusion:
    # user kwargs override the variant's architecture (timm convention)
    return _create(name, pretrained=pretrained, **dict(VARIANTS[name].kwargs(), **kwargs))


@register_model
def convformer_tiny_early(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, tiny, attention from stage 2 (stride 8); architecture in ``VARIANTS['convformer_tiny_early']``."""
    return _create_variant('convformer_tiny_early', pretrained, **kwargs)


@register_model
def convformer_tiny(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, tiny, attention from stage 3 (stride 16); architecture in ``VARIANTS['convformer_tiny']``."""
    return _create_variant('convformer_tiny', pretrained, **kwargs)


@register_model
def convformer_tiny_late(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, tiny, attention in stage 4 only (stride 32); architecture in ``VARIANTS['convformer_tiny_late']``."""
    return _create_variant('convformer_tiny_late', pretrained, **kwargs)


@register_model
def convformer_small_early(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, small, attention from stage 2 (stride 8); architecture in ``VARIANTS['convformer_small_early']``."""
    return _create_variant('convformer_small_early', pretrained, **kwargs)


@register_model
def convformer_small(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, small, attention from stage 3 (stride 16); architecture in ``VARIANTS['convformer_small']``."""
    return _create_variant('convformer_small', pretrained, **kwargs)


@register_model
def convformer_small_late(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, small, attention in stage 4 only (stride 32); architecture in ``VARIANTS['convformer_small_late']``."""
    return _create_variant('convformer_small_late', pretrained, **kwargs)


@register_model
def convformer_base_early(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, base, attention from stage 2 (stride 8); architecture in ``VARIANTS['convformer_base_early']``."""
    return _create_variant('convformer_base_early', pretrained, **kwargs)


@register_model
def convformer_base(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, base, attention from stage 3 (stride 16); architecture in ``VARIANTS['convformer_base']``."""
    return _create_variant('convformer_base', pretrained, **kwargs)


@register_model
def convformer_base_late(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    """ConvFormer fusion, base, attention in stage 4 only (stride 32); architecture in ``VARIANTS['convformer_base_late']``."""
    return _create_variant('convformer_base_late', pretrained, **kwargs)
