"""Registration of the nine ConvFormer fusion models in timm: the only code that touches timm's registry.

timm keys a model by its entrypoint's function name and files it under this module's basename
(``timm.list_models(module='convformer_fusion')``); ``default_cfgs`` must exist before registration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from .model import ConvFormerFusion
from .pretrained import check_weights_reachable, keep_untagged_default, pretrained_tags
from .variants import VARIANTS

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
    """Map a checkpoint onto ``model``'s parameter names before timm loads it.

    A training checkpoint wrapped as ``{'state_dict': ...}`` or ``{'model': ...}`` is unwrapped; any other dict
    comes back unchanged (the published ``model.safetensors`` files already use the current names). This is the
    single place where a future rename of a module maps the names of already published weights to the new ones
    (as timm's ``checkpoint_filter_fn`` of each model file does), so old repos keep loading.

    Args:
        state_dict: The loaded checkpoint, possibly wrapped.
        model: The freshly built model the weights are for.

    Returns:
        The state dict with the model's parameter names.
    """
    for key in ('state_dict', 'model'):
        if isinstance(state_dict.get(key), Mapping):
            return state_dict[key]
    return state_dict


def _create(variant: str, pretrained: bool = False, **kwargs) -> ConvFormerFusion:
    if pretrained:
        cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        check_weights_reachable(cfg.to_dict(), cache_dir=kwargs.get('cache_dir'))
    return build_model_with_cfg(
        ConvFormerFusion,
        variant,
        pretrained,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs) -> ConvFormerFusion:
        # user kwargs override the variant's architecture (timm convention)
        return _create(name, pretrained=pretrained, **dict(VARIANTS[name].kwargs(), **kwargs))

    create.__name__ = create.__qualname__ = name  # timm registers an entrypoint under its __name__
    create.__doc__ = f'{name}: {VARIANTS[name]}'
    return create


for _name in VARIANTS:
    globals()[_name] = register_model(_entrypoint(_name))
