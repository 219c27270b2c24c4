"""The one place models are created and pretrained weights are loaded, for every tier and entry point.

``create_model`` / ``load_model`` build any timm model (hybrid_zoo's included) from a registry name, an ``arch.tag``,
an ``hf-hub:org/name[@revision]`` repo or a local folder in ``save_for_hf`` layout. With ``pretrained=True`` the
weights go through one checked loader, whatever the entry point (``hub.load``, ``hybrid-zoo eval``,
``train --pretrained``):

1. the source is resolved: a repo's ``config.json`` first, then its weights at the same commit; a folder; or the
   registry cfg of a tag (``hf_hub_id``, ``file``, ``url``);
2. exactly one weights file is fetched and verified: ``model.safetensors`` (header, and sha256 when the Hub names
   it); a pickle (``pytorch_model.bin``) is refused unless ``allow_pickle=True``, then read with
   ``torch.load(weights_only=True)``; every tensor is read once and NaN/inf values are refused;
3. timm builds the model and loads *that file*: the verified path replaces every weight source of the cfg
   (``file``, ``url``, ``hf_hub_filename``, ``source``, ``custom_load``), so a repo's ``config.json`` can never
   point timm at another file. timm's own loading then does what it does for ``pretrained=True``: the model's
   checkpoint filter (e.g. ``convformer_fusion.checkpoint_filter_fn``), a new classifier when ``num_classes``
   differs, the first conv adapted when ``in_chans`` differs, and a strict load otherwise;
4. a tensor stored as an integer where the model has a floating-point one is refused.

A ``config.json`` from a folder or a repo is untrusted input and is checked before anything is built
(``check_config``): its size and nesting, the fields timm reads (``num_classes``, ``input_size``, ``label_names``)
within bounds, no weights source of its own (``file``, ``url``, ``hf_hub_filename``), and ``model_args`` limited to
what the architecture's constructor accepts, never the factory's own options (``pretrained_strict``,
``checkpoint_path``, ``pretrained_cfg_overlay``...), with a parameter count a meta-device build measures. The model
is then built from that checked dict; timm does not read the file again. Weights load strictly unless the caller
passes ``pretrained_strict=False``.

Only torch and timm are imported here; ``huggingface_hub`` and ``safetensors`` (the ``hub`` extra) are imported by
the functions that download or read weights. Nothing here imports a tier (``train``, ``hub``, ``benchmarks``).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from hybrid_zoo.atomic import sha256_file
from hybrid_zoo.run_files import CONFIG_NAME, MODEL_DIR, PICKLE_WEIGHTS_NAME, WEIGHTS_NAME

__all__ = [
    'CONFIG_NAME',
    'HUB_PREFIXES',
    'MAX_CONFIG_BYTES',
    'MAX_CONFIG_DEPTH',
    'MAX_IMG_SIZE',
    'MAX_IN_CHANS',
    'MAX_NUM_CLASSES',
    'MAX_PARAMS',
    'PICKLE_WEIGHTS_NAME',
    'WEIGHTS_NAME',
    'ConfigError',
    'CorruptWeightsError',
    'ModelLoadError',
    'PickleRefusedError',
    'UnknownModelError',
    'build_from_folder',
    'check_dtypes',
    'check_config',
    'check_model_name',
    'check_safetensors',
    'create_model',
    'load_model',
    'model_name',
    'read_config',
    'resolve_model_source',
    'scan_weights',
]

logger = logging.getLogger(__name__)

HUB_PREFIXES = ('hf-hub:', 'hf_hub:', 'local-dir:')
IMPORT_HINT = 'import hybrid_zoo'
# what a checked load hands timm in place of every weight source a cfg may name (see _build_checked)
_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id', 'hf_hub_filename', 'source', 'custom_load')
_PICKLE_SUFFIXES = ('.bin', '.pth', '.pt', '.pth.tar', '.pkl', '.ckpt')
_COMMIT = re.compile(r'[0-9a-f]{40}')

# What an untrusted config.json may ask for: generous for real models (ImageNet-22k has 21,843 classes,
# hyperspectral inputs a few hundred bands), small enough that nothing is allocated without bound.
MAX_CONFIG_BYTES = 4 << 20
MAX_CONFIG_DEPTH = 16  # timm writes 3 levels (config -> pretrained_cfg -> mean)
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 1024
MAX_IMG_SIZE = 4096
MAX_BLOCKS = 256  # the sum of a model_args depth field (depth, depths, layers...); timm's deepest is ~70
MAX_PARAMS = 1_000_000_000  # 4 GB of fp32 weights
MAX_ARG_INT = 1 << 20  # any other integer in model_args
MAX_ARG_ITEMS = 64  # items in one model_args list
# create_model / build_model_with_cfg options: how to build and load, never what to build. A config setting
# one of these would choose the loading (pretrained_strict=False loads half the weights silently) or collide with
# the caller's own argument (TypeError)
_FACTORY_ARGS = frozenset({
    'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay', 'pretrained_strict', 'pretrained_filter_fn',
    'pretrained_model_args', 'checkpoint_path', 'cache_dir', 'scriptable', 'exportable', 'no_jit', 'features_only',
    'feature_cfg', 'feature_cls', 'out_indices', 'kwargs_filter', 'model_cfg', 'pruned', 'device', 'dtype',
    'allow_pickle',
})  # fmt: skip
_DEPTH_ARGS = frozenset({'depth', 'depths', 'layers', 'num_layers', 'num_blocks', 'blocks'})
# weights sources a config.json may not name: timm's save_for_hf writes none of them (custom_load: false)
_CONFIG_SOURCE_KEYS = ('file', 'url', 'hf_hub_filename', 'state_dict', 'custom_load')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


class ModelLoadError(RuntimeError):
    """A model or its weights that cannot be loaded; the message says what was expected and what to do."""


class UnknownModelError(ModelLoadError, ValueError):
    """A model name timm does not know; the message suggests close names and the plugin import."""


class CorruptWeightsError(ModelLoadError, ValueError):
    """A weights file that is truncated, corrupted, not safetensors, or holds unusable values (NaN, wrong dtype)."""


class ConfigError(ModelLoadError, ValueError):
    """A ``config.json`` asking for what no model may: a field out of bounds, a weights source of its own, or
    ``model_args`` the architecture does not accept; the message names the field, the limit and the value."""


class PickleRefusedError(ModelLoadError):
    """Only a pickle (``pytorch_model.bin``) is available and unpickling was not allowed, or it holds more than
    tensors."""


# ---- names and sources ------------------------------------------------------------------------------------------------
def check_model_name(name: str, *, named_by: str | None = None) -> None:
    """Raise ``UnknownModelError`` when ``name`` (``arch`` or ``arch.tag``) is not registered in timm.

    Args:
        name: The registry name.
        named_by: Where the name comes from (e.g. ``'org/x@main: config.json'``), for the message.

    Raises:
        UnknownModelError: With the closest registered names and the plugin-import hint.
    """
    arch = str(name).split('.', 1)[0]
    if timm.is_model(arch):
        return
    close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    where = f' (named by {named_by})' if named_by else ''
    raise UnknownModelError(
        f'unknown model {arch!r}{where}.{hint} It is not registered in timm, which has no plugin discovery: a package '
        f'registers its models when imported, so run `{IMPORT_HINT}` (the convformer_* models) or import the package '
        'that defines it before timm.create_model(...); timm.list_models("*pattern*") lists the registered names.'
    )


def resolve_model_source(model: str, pretrained: str | bool | None) -> tuple[str, bool]:
    """The ``create_model`` name and ``pretrained`` flag for ``--model`` / ``--pretrained``.

    Args:
        model: Registry name (``convformer_tiny``), ignored when ``pretrained`` names a Hub repo or a folder.
        pretrained: ``None``/``False``: random init. ``True`` or ``'default'``: the registry's default weights.
            ``'hf-hub:org/name'``, ``'local-dir:/path'`` or an existing folder: those weights (the architecture comes
            from their ``config.json``). ``'arch.tag'``: that registry tag. A bare ``'tag'``: ``model.tag``.

    Returns:
        ``(name, pretrained)`` for ``create_model``.

    Raises:
        UnknownModelError: ``pretrained`` looks like a Hub repo id without its ``hf-hub:`` prefix.
    """
    if not pretrained:
        return model, False
    if pretrained is True or pretrained == 'default':
        return model, True
    if pretrained.startswith(HUB_PREFIXES):
        return pretrained, True
    if os.path.isdir(pretrained):
        return f'local-dir:{os.path.abspath(pretrained)}', True
    if '/' in pretrained:
        raise UnknownModelError(f"--pretrained {pretrained!r}: write a Hub repo as 'hf-hub:{pretrained}'")
    return (pretrained if '.' in pretrained else f'{model}.{pretrained}'), True


def model_name(model: nn.Module) -> str:
    """The registry name of a timm model (what ``config.json["architecture"]`` records)."""
    return model.pretrained_cfg.get('architecture') or type(model).__name__.lower()


# ---- building ---------------------------------------------------------------------------------------------------------
def create_model(
    name: str, pretrained: bool = False, img_size: int | None = None, *, allow_pickle: bool = False, **kwargs: Any
) -> nn.Module:
    """Build a timm model; with ``pretrained=True`` its weights come through the checked loader (module docstring).

    Args:
        name: A registry name (``convformer_tiny``), ``arch.tag``, ``hf-hub:org/name[@revision]``,
            ``local-dir:/path`` or a folder path (a folder in ``save_for_hf`` layout).
        pretrained: Load the published weights of ``name``.
        img_size: Input resolution, passed to the model only when its input size is fixed (ViT-style position
            tables); other models take any size and their constructors do not accept the argument.
        allow_pickle: Accept weights that exist only as a pickle, read with ``torch.load(weights_only=True)``.
        **kwargs: Passed to ``timm.create_model``: ``num_classes`` (a different value gets a new classifier),
            ``in_chans`` (the first conv is adapted), ``features_only``, ``pretrained_cfg_overlay``, ``cache_dir``,
            ``pretrained_strict=False`` (load what matches and skip the rest: only when the caller asks)...

    Returns:
        The model, in training mode as timm returns it.

    Raises:
        UnknownModelError: ``name`` (or the architecture its ``config.json`` names) is not registered.
        ConfigError: The ``config.json`` of a folder or repo asks for what no model may (``check_config``).
        PickleRefusedError: Only a pickle is available and ``allow_pickle`` is False.
        CorruptWeightsError: The weights are truncated, corrupted, hold NaN/inf or an integer where floats belong,
            or do not fit the model (missing or unexpected tensors).
        ModelLoadError: No config or no weights where they were expected.
    """
    if os.path.isdir(name) and not timm.is_model(name):  # a folder path, as load_model and eval take it
        name = f'local-dir:{os.path.abspath(name)}'
    source, model_id = _parse_name(name)
    if source is None:
        check_model_name(model_id)
    if pretrained:
        checked = _checked_weights(source, model_id, kwargs, allow_pickle)
    elif source is not None:  # the architecture still comes from an untrusted config.json
        checked = _Checked(model_id, None, model_id, config=_source_config(source, model_id, kwargs.get('cache_dir')))
    else:
        checked = None

    def build(**extra: Any) -> nn.Module:
        if checked is not None:
            return _build_checked(checked, pretrained, {**kwargs, **extra})
        return _timm_create(name, pretrained=pretrained, **kwargs, **extra)

    if img_size and source is None:
        cfg = timm.models.get_pretrained_cfg(model_id)
        if cfg is not None and cfg.fixed_input_size:  # position tables / windows are sized at construction
            return build(img_size=img_size)
    model = build()
    size = tuple(model.pretrained_cfg.get('input_size', (3, 0, 0))[1:])
    if img_size and model.pretrained_cfg.get('fixed_input_size') and size != (img_size, img_size):
        model = build(img_size=img_size)
    return model


def load_model(source: str | os.PathLike, *, allow_pickle: bool = False, **kwargs: Any) -> nn.Module:
    """A model with its pretrained weights: a folder in ``save_for_hf`` layout, an ``hf-hub:``/``local-dir:`` id or
    ``arch.tag``; ``create_model(source, pretrained=True, ...)``, with a folder path accepted as it is."""
    source = str(source)
    if os.path.isdir(source):
        source = f'local-dir:{os.path.abspath(source)}'
    return create_model(source, pretrained=True, allow_pickle=allow_pickle, **kwargs)


def build_from_folder(folder: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """An untrained model built from ``<folder>/config.json`` (checked by ``check_config``) as timm builds it after
    download.

    Raises:
        ModelLoadError: ``config.json`` is missing or unreadable.
        ConfigError: It asks for what no model may.
        UnknownModelError: It names an architecture timm does not know.
    """
    folder = Path(folder)
    config = _parsed_config(read_config(folder / CONFIG_NAME, str(folder)), {'source': 'local-dir'})
    return _build_checked(_Checked(str(folder), None, str(folder), config=config), False, kwargs)


def _parse_name(name: str) -> tuple[str | None, str]:
    try:
        return timm.models.parse_model_name(name)
    except ValueError as e:  # a path or repo id without its prefix, or an unknown prefix
        raise UnknownModelError(str(e)) from None


def _timm_create(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with ``UnknownModelError`` for an architecture a ``config.json`` names."""
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if not str(e).startswith('Unknown model'):
            raise
        check_model_name(str(e).split('(')[-1].rstrip(')'), named_by=name)
        raise


# ---- untrusted config.json --------------------------------------------------------------------------------------------
def read_config(path: str | os.PathLike, where: str | None = None) -> dict:
    """Read a ``config.json`` from a folder or a repo as the untrusted input it is: size and nesting are bounded
    before it is parsed, then ``check_config`` checks what it asks for.

    Args:
        path: The file.
        where: How to name its folder or repo in errors; defaults to the file's folder.

    Raises:
        ModelLoadError: The file is missing or not JSON.
        ConfigError: It is too large or too deep, or ``check_config`` refuses it.
        UnknownModelError: It names an architecture timm does not know.
    """
    path = Path(path)
    where = where or str(path.parent)
    if not path.is_file():
        found = f'has no {CONFIG_NAME}' if path.parent.is_dir() else 'does not exist'
        raise ModelLoadError(
            f'{where} {found}: expected a folder written by timm.models.save_for_hf with {CONFIG_NAME} and '
            f'{WEIGHTS_NAME} (hybrid-zoo train writes one to <output_dir>/{MODEL_DIR})'
        )
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f'{where}: {CONFIG_NAME} is {size:,d} bytes; expected at most {MAX_CONFIG_BYTES:,d}')
    try:
        text = path.read_bytes().decode('utf-8')
    except UnicodeDecodeError as e:
        raise ModelLoadError(f'{where}: {CONFIG_NAME} is not valid JSON ({e})') from None
    depth = json_depth(text)
    if depth > MAX_CONFIG_DEPTH:  # json.loads recurses once per level: 200,000 levels end in RecursionError
        raise ConfigError(
            f'{where}: {CONFIG_NAME} nests {depth} levels of lists and objects; expected at most {MAX_CONFIG_DEPTH}'
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelLoadError(f'{where}: {CONFIG_NAME} is not valid JSON ({e})') from None
    return check_config(config, where)


def json_depth(text: str) -> int:
    """How deeply the lists and objects of a JSON text nest (0 for a scalar), without parsing it."""
    brackets = re.sub(r'[^\[\]{}]', '', _STRING.sub('', text))
    depth = deepest = 0
    for char in brackets:
        depth += 1 if char in '[{' else -1
        deepest = max(deepest, depth)
    return deepest


def check_config(config: Any, where: str = CONFIG_NAME) -> dict:
    """Check what an untrusted ``config.json`` asks timm to build, before anything is built; returns it.

    The fields timm reads are bounded (``MAX_NUM_CLASSES``, ``MAX_IN_CHANS``, ``MAX_IMG_SIZE``); the config may name
    no weights source (``file``, ``url``, ``hf_hub_filename``, ``state_dict``, ``custom_load``: the loader chooses
    the file); ``model_args`` may hold only arguments the architecture's constructor accepts (never the factory's
    own, such as ``pretrained_strict`` or ``checkpoint_path``), and the model they describe, built on the meta
    device (nothing allocated), has at most ``MAX_PARAMS`` parameters.

    Args:
        config: The parsed ``config.json``.
        where: How to name its folder or repo in errors.

    Raises:
        ConfigError: Naming the field, the limit and the value.
        UnknownModelError: ``architecture`` is not registered.
    """
    if not isinstance(config, dict):
        raise ConfigError(f'{where}: {CONFIG_NAME} holds {type(config).__name__}; expected a JSON object')
    arch = config.get('architecture')
    if not isinstance(arch, str):
        raise ModelLoadError(f'{where}: {CONFIG_NAME} names no architecture (expected "architecture": "<name>")')
    check_model_name(arch, named_by=f'{where}: {CONFIG_NAME}')
    field = _field_checker(where)
    field('num_classes', config.get('num_classes'), _int_in(0, MAX_NUM_CLASSES))
    # timm reads a config without pretrained_cfg (an older layout) as one flat pretrained cfg
    legacy = {k: v for k, v in config.items() if k not in ('architecture', 'num_features', 'labels')}
    pcfg = config.get('pretrained_cfg', {}) if 'pretrained_cfg' in config else legacy
    field('pretrained_cfg', pcfg, lambda v: 'a JSON object' if not isinstance(v, dict) else None)
    unknown = sorted(set(pcfg) - set(timm.models.PretrainedCfg.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f'{where}: {CONFIG_NAME} pretrained_cfg has fields timm does not know: {", ".join(unknown)}; expected '
            'only PretrainedCfg fields (as timm.models.save_for_hf writes them)'
        )
    for key in _CONFIG_SOURCE_KEYS:
        if pcfg.get(key):
            raise ConfigError(
                f'{where}: {CONFIG_NAME} pretrained_cfg.{key} is {pcfg[key]!r}: a config does not choose its weights '
                f'(the loader reads {WEIGHTS_NAME} beside it); expected no {key}, as timm.models.save_for_hf writes'
            )
    for key, check in _PCFG_CHECKS.items():
        if key in pcfg and pcfg[key] is None and _PCFG_DEFAULTS.get(key) is not None:
            raise ConfigError(
                f'{where}: {CONFIG_NAME} pretrained_cfg.{key} is null; expected {check(object()) or "a value"} '
                f'(or no {key}: timm then uses {_PCFG_DEFAULTS[key]!r})'
            )
        field(f'pretrained_cfg.{key}', pcfg.get(key), check)
    for key in ('label_names', 'label_descriptions'):
        for scope, value in (('', config.get(key)), ('pretrained_cfg.', pcfg.get(key))):
            field(f'{scope}{key}', value, _labels)
    args = config.get('model_args', {})
    field('model_args', args, lambda v: 'a JSON object' if not isinstance(v, dict) else None)
    _check_model_args(arch, args, field, where)
    _check_size(arch, config, where)
    return config


def _field_checker(where: str) -> Any:
    def field(name: str, value: Any, check: Any) -> None:
        if value is None:
            return
        expected = check(value)
        if expected:
            shown = repr(value) if len(repr(value)) <= 80 else f'{repr(value)[:77]}...'
            raise ConfigError(f'{where}: {CONFIG_NAME} {name} is {shown}; expected {expected}')

    return field


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_in(low: int, high: int) -> Any:
    return lambda v: None if _is_int(v) and low <= v <= high else f'an integer from {low:,d} to {high:,d}'


def _input_size(value: Any) -> str | None:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 3
        and all(_is_int(v) for v in value)
        and 1 <= value[0] <= MAX_IN_CHANS
        and all(1 <= v <= MAX_IMG_SIZE for v in value[1:])
    )
    return (
        None
        if ok
        else f'[channels, height, width] with 1 to {MAX_IN_CHANS:,d} channels and sides of 1 to {MAX_IMG_SIZE:,d}'
    )


def _one_of(*allowed: str) -> Any:
    return lambda v: None if v in allowed else f'one of {", ".join(allowed)}'


def _bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else 'true or false'


def _crop_pct(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 2
    return None if ok else 'a number above 0 and at most 2'


def _channel_stats(positive: bool) -> Any:
    def check(value: Any) -> str | None:
        ok = (
            isinstance(value, list | tuple)
            and 1 <= len(value) <= MAX_IN_CHANS
            and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            and (not positive or all(v > 0 for v in value))
        )
        return None if ok else f'a list of 1 to {MAX_IN_CHANS:,d} finite numbers{" above 0" if positive else ""}'

    return check


def _labels(value: Any) -> str | None:
    if isinstance(value, list | dict) and len(value) <= MAX_NUM_CLASSES:
        return None
    return f'a list or object of at most {MAX_NUM_CLASSES:,d} labels'


def _img_size(value: Any) -> str | None:
    sides = value if isinstance(value, list | tuple) and len(value) == 2 else [value]
    ok = all(_is_int(v) and 1 <= v <= MAX_IMG_SIZE for v in sides)
    return None if ok else f'a side (or [height, width]) from 1 to {MAX_IMG_SIZE:,d}'


# the pretrained_cfg fields timm's data config and loader read, each with what it must hold
_PCFG_CHECKS = {
    'num_classes': _int_in(0, MAX_NUM_CLASSES),
    'input_size': _input_size,
    'test_input_size': _input_size,
    'min_input_size': _input_size,
    'fixed_input_size': _bool,
    'interpolation': _one_of('bicubic', 'bilinear', 'nearest', 'lanczos', 'box', 'hamming', 'random'),
    'crop_pct': _crop_pct,
    'test_crop_pct': _crop_pct,
    'crop_mode': _one_of('center', 'squash', 'border'),
    'mean': _channel_stats(positive=False),
    'std': _channel_stats(positive=True),
}
_PCFG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(timm.models.PretrainedCfg)}


def accepted_model_args(arch: str) -> frozenset[str] | None:
    """The constructor arguments a config's ``model_args`` may set for ``arch``; ``None`` when the architecture's
    constructor is not known here (other timm models: the meta-device build in ``check_config`` decides)."""
    import inspect

    try:
        from hybrid_zoo.models import MODEL_NAMES, ConvFormerFusion
    except ImportError:
        return None
    if arch not in MODEL_NAMES:
        return None
    params = inspect.signature(ConvFormerFusion.__init__).parameters
    return frozenset(params) - {'self'} - _FACTORY_ARGS


def _check_model_args(arch: str, args: dict, field: Any, where: str) -> None:
    accepted = accepted_model_args(arch)
    for key, value in args.items():
        if key in _FACTORY_ARGS or (accepted is not None and key not in accepted):
            allowed = f'one of {", ".join(sorted(accepted))}' if accepted else f'a constructor argument of {arch}'
            what = (
                'a loading option of the factory, not an argument of the architecture'
                if key in _FACTORY_ARGS
                else (f'not an argument of {arch}')
            )
            raise ConfigError(f'{where}: {CONFIG_NAME} model_args.{key} is {what}; expected {allowed}')
        name = f'model_args.{key}'
        if key == 'num_classes':
            field(name, value, _int_in(0, MAX_NUM_CLASSES))
        elif key == 'in_chans':
            field(name, value, _int_in(1, MAX_IN_CHANS))
        elif key == 'img_size':
            field(name, value, _img_size)
        elif key in _DEPTH_ARGS:
            blocks = value if isinstance(value, list) else [value]
            ok = all(_is_int(v) and v >= 0 for v in blocks) and sum(blocks) <= MAX_BLOCKS
            field(
                name, value, lambda v, ok=ok: None if ok else f'block counts >= 0 adding up to at most {MAX_BLOCKS:,d}'
            )
        else:
            field(name, value, _bounded_value)


def _bounded_value(value: Any) -> str | None:
    if isinstance(value, list):
        if len(value) > MAX_ARG_ITEMS:
            return f'at most {MAX_ARG_ITEMS} items'
        return next((e for e in map(_bounded_value, value) if e), None)
    if isinstance(value, dict):
        return next((e for e in map(_bounded_value, value.values()) if e), None)
    if _is_int(value) and abs(value) > MAX_ARG_INT:
        return f'integers from {-MAX_ARG_INT:,d} to {MAX_ARG_INT:,d}'
    if isinstance(value, float) and not math.isfinite(value):
        return 'finite numbers'
    return None


def _check_size(arch: str, config: dict, where: str) -> None:
    """Build the model the config describes on the meta device (no memory) and bound its parameter count; an
    argument the constructor refuses is named here, before anything real is built."""
    try:
        parsed = _parsed_config(config, {})
    except Exception as e:  # timm's own parsing of a config the field checks let through
        raise ConfigError(
            f'{where}: {CONFIG_NAME} does not parse as timm reads it ({type(e).__name__}: {e}); expected the layout '
            'timm.models.save_for_hf writes'
        ) from None
    try:
        model = _timm_create(parsed.arch, pretrained=False, device='meta', **_build_kwargs(parsed, {}))
    except ModelLoadError:
        raise
    except Exception as e:  # whatever the constructor raises for arguments it cannot take
        reason = (str(e).strip().splitlines() or [''])[0]
        raise ConfigError(
            f'{where}: {CONFIG_NAME} model_args {parsed.model_args} do not build {arch}: {type(e).__name__}: {reason}; '
            'expected arguments its constructor accepts'
        ) from None
    params = sum(p.numel() for p in model.parameters())
    if params > MAX_PARAMS:
        raise ConfigError(
            f'{where}: {CONFIG_NAME} describes {arch} with {params:,d} parameters (model_args {parsed.model_args}); '
            f'expected at most {MAX_PARAMS:,d}'
        )


@dataclass(frozen=True)
class _Config:
    """A checked ``config.json`` as timm's hub loader parses it: what to build and its pretrained cfg."""

    arch: str
    pretrained_cfg: dict
    model_args: dict


def _parsed_config(config: dict, provenance: dict) -> _Config:
    from timm.models._hub import _parse_model_cfg  # the parsing timm's hf-hub: and local-dir: names use

    pcfg, arch, model_args = _parse_model_cfg(copy.deepcopy(config), dict(provenance))
    return _Config(arch, pcfg, dict(model_args))


def _build_kwargs(config: _Config, kwargs: dict) -> dict:
    """``timm.create_model`` kwargs for a parsed config: what timm's ``local-dir:`` loading passes, the caller's
    kwargs taking precedence over the config's ``model_args``."""
    return {
        'pretrained_cfg': copy.deepcopy(config.pretrained_cfg),
        'pretrained_model_args': dict(config.model_args),
        **config.model_args,
        **kwargs,
    }


def _source_config(source: str, model_id: str, cache_dir: Any) -> _Config:
    """The checked config of an ``hf-hub:`` repo or a ``local-dir:`` folder (no weights)."""
    if source == 'hf-hub':
        path, where = _hub_config(model_id, cache_dir)
        return _parsed_config(read_config(path, where), {'source': 'hf-hub', 'hf_hub_id': model_id})
    return _parsed_config(read_config(Path(model_id) / CONFIG_NAME, model_id), {'source': 'local-dir'})


# ---- the checked loader -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Checked:
    """A verified weights file and what timm builds around it."""

    name: str  # the registry name 'arch[.tag]' timm builds when there is no config
    path: Path | None  # the one file timm loads; None: no weights, or the caller's pretrained_cfg['state_dict']
    label: str  # how messages name the file, e.g. 'org/x@main:model.safetensors'
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)  # of every tensor in the file
    provenance: dict[str, Any] = field(default_factory=dict)  # the source fields the built model's cfg keeps
    config: _Config | None = None  # the checked config.json of a folder or repo


def _checked_weights(source: str | None, model_id: str, kwargs: dict, allow_pickle: bool) -> _Checked:
    if source == 'hf-hub':
        return _from_hub_repo(model_id, kwargs.get('cache_dir'), allow_pickle)
    if source == 'local-dir':
        return _from_folder(Path(model_id), allow_pickle)
    return _from_registry(model_id, kwargs, allow_pickle)


def _hub_config(model_id: str, cache_dir: Any) -> tuple[Path, str]:
    """(the downloaded ``config.json`` of an ``hf-hub:`` repo, how messages name the repo)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(model_id)
    where = f'{repo_id}@{revision or "main"}'
    try:
        path = hf_hub_download(repo_id, CONFIG_NAME, revision=revision, cache_dir=cache_dir, library_name='timm')
    except EntryNotFoundError:
        raise ModelLoadError(
            f'{where} has no {CONFIG_NAME}: expected a repo in timm format (hybrid-zoo push, timm push_to_hf_hub)'
        ) from None
    return Path(path), where


def _from_hub_repo(model_id: str, cache_dir: Any, allow_pickle: bool) -> _Checked:
    """An ``hf-hub:`` repo: its ``config.json``, then ``model.safetensors`` at the commit that config came from."""
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(model_id)
    config_path, where = _hub_config(model_id, cache_dir)
    provenance = {'source': 'hf-hub', 'hf_hub_id': model_id}
    config = _parsed_config(read_config(config_path, where), provenance)
    # the cache files a download under snapshots/<commit>/: the weights are fetched at that same commit, so a push
    # between the two downloads cannot pair this config with other weights
    commit = config_path.parent.name if _COMMIT.fullmatch(config_path.parent.name) else revision
    path, pickled = _download_weights(
        repo_id, commit, where, (WEIGHTS_NAME,), PICKLE_WEIGHTS_NAME, cache_dir, allow_pickle
    )
    label = f'{where}:{path.name}'
    return _Checked(model_id, path, label, _verify(path, label, pickled), provenance, config)


def _from_folder(folder: Path, allow_pickle: bool) -> _Checked:
    """A local folder in ``save_for_hf`` layout: ``model.safetensors``, or (if allowed) ``pytorch_model.bin``."""
    provenance = {'source': 'local-dir', 'file': str(folder)}
    config = _parsed_config(read_config(folder / CONFIG_NAME, str(folder)), provenance)
    path, pickled = _folder_weights(folder, allow_pickle)
    return _Checked(str(folder), path, str(path), _verify(path, str(path), pickled), provenance, config)


def _from_registry(model_id: str, kwargs: dict, allow_pickle: bool) -> _Checked:
    """A registry name: the weights its pretrained cfg (code, plus the caller's overlay) names."""
    from hybrid_zoo.models.pretrained import check_pinned_weights, check_weights_reachable

    arch, tag = timm.models.split_model_name_tag(model_id)
    cfg = timm.models.resolve_pretrained_cfg(
        arch, kwargs.get('pretrained_cfg') or tag or None, kwargs.get('pretrained_cfg_overlay')
    ).to_dict()
    provenance = {k: cfg.get(k) for k in _SOURCE_KEYS if k != 'state_dict'}
    if cfg.get('custom_load'):
        raise ModelLoadError(
            f'{model_id}: its weights need a model-specific loader (custom_load); the checked loader reads only '
            'safetensors and, with allow_pickle=True, PyTorch state dicts. Use timm.create_model(..., pretrained=True) '
            'directly for a source you trust.'
        )
    if cfg.get('state_dict') is not None:  # tensors the caller holds: nothing is downloaded or unpickled
        _check_finite(_tensor_items(cfg['state_dict']), f'{model_id}: pretrained_cfg["state_dict"]')
        return _Checked(model_id, None, f'{model_id}: pretrained_cfg["state_dict"]')
    if cfg.get('file'):
        path = Path(cfg['file'])
        if path.is_dir():
            path, pickled = _folder_weights(path, allow_pickle)
        else:
            pickled = _is_pickle(path.name)
            if pickled:
                _refuse_pickle(str(path), allow_pickle)
        return _Checked(model_id, path, str(path), _verify(path, str(path), pickled), provenance)
    if cfg.get('hf_hub_id'):
        from timm.models._hub import hf_split

        repo_id, revision = hf_split(cfg['hf_hub_id'])
        where = f'{repo_id}@{revision or "main"}'
        safe, pickle = _weight_names(cfg.get('hf_hub_filename'))
        if (safe, pickle) == _weight_names(None):  # the preflight knows timm's default names only
            # fails in seconds, with directions, where hf_hub_download would retry for tens of seconds
            check_weights_reachable(dict(cfg, hf_hub_filename=None), cache_dir=kwargs.get('cache_dir'))
        path, pickled = _download_weights(repo_id, revision, where, safe, pickle, kwargs.get('cache_dir'), allow_pickle)
        label = f'{where}:{path.name}'
        check_pinned_weights(cfg, path)  # a registered tag names one set of weights, by commit and sha256
        return _Checked(model_id, path, label, _verify(path, label, pickled), provenance)
    if cfg.get('url'):
        from timm.models._hub import download_cached_file

        url = cfg['url'] if isinstance(cfg['url'], str) else cfg['url'][0]
        pickled = _is_pickle(url.split('?')[0])
        if pickled:
            _refuse_pickle(url, allow_pickle)
        path = Path(download_cached_file(url, check_hash=False, progress=False, cache_dir=kwargs.get('cache_dir')))
        return _Checked(model_id, path, url, _verify(path, url, pickled), provenance)
    raise ModelLoadError(
        f'{model_id} has no pretrained weights (its pretrained cfg names no hf_hub_id, file or url): '
        f'build it with pretrained=False, or name a tag with weights (timm.list_pretrained("{arch}*")).'
    )


def _build_checked(checked: _Checked, pretrained: bool, kwargs: dict) -> nn.Module:
    """timm builds the model (from the checked config, if any) and loads ``checked.path`` and nothing else."""
    kwargs = dict(kwargs)
    if checked.path is not None:
        # every weight source of the cfg is replaced: the checked file is the only one timm may read
        only = dict.fromkeys(_SOURCE_KEYS) | {'file': str(checked.path), 'custom_load': False}
        kwargs['pretrained_cfg_overlay'] = {**(kwargs.get('pretrained_cfg_overlay') or {}), **only}
    try:
        if checked.config is not None:
            model = _timm_create(checked.config.arch, pretrained=pretrained, **_build_kwargs(checked.config, kwargs))
        else:
            model = _timm_create(checked.name, pretrained=pretrained, **kwargs)
    except RuntimeError as e:  # a strict load_state_dict: tensors missing, unexpected or of another shape
        if not (pretrained and str(e).startswith('Error(s) in loading state_dict')):
            raise
        lines = str(e).splitlines()
        detail = ' '.join(line.strip() for line in lines[1:4])
        more = f' ({len(lines) - 4} more lines)' if len(lines) > 4 else ''
        raise CorruptWeightsError(
            f'{checked.label} does not fit the model it is loaded into: {detail[:600]}{more}. Expected every tensor of '
            'the model with its shape; pass pretrained_strict=False only to load a partial checkpoint on purpose.'
        ) from None
    if checked.path is None:
        return model
    check_dtypes(checked.dtypes, model, name=checked.label)
    for module in model.modules():  # the features wrapper keeps a copy of the cfg
        cfg = getattr(module, 'pretrained_cfg', None)
        if isinstance(cfg, dict):
            for key in _SOURCE_KEYS:  # where the weights came from, as plain timm records it; not the cache path
                value = checked.provenance.get(key)
                if value is None:
                    cfg.pop(key, None)
                else:
                    cfg[key] = value
    return model


def _weight_names(filename: str | None) -> tuple[tuple[str, ...], str | None]:
    """(safetensors names to try, pickle name) for a registry cfg's ``hf_hub_filename``."""
    if not filename:
        return (WEIGHTS_NAME,), PICKLE_WEIGHTS_NAME
    if filename.endswith('.safetensors'):
        return (filename,), None
    stem = filename.rsplit('.', 1)[0]
    return (WEIGHTS_NAME if filename == PICKLE_WEIGHTS_NAME else f'{stem}.safetensors',), filename


def _download_weights(
    repo_id: str,
    revision: str | None,
    where: str,
    safe: tuple[str, ...],
    pickle: str | None,
    cache_dir: Any,
    allow_pickle: bool,
) -> tuple[Path, bool]:
    """The first of ``safe`` the repo has, else its ``pickle`` when allowed: (local path, is a pickle)."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in safe:
        try:
            return Path(
                hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, library_name='timm')
            ), False
        except EntryNotFoundError:
            continue
    if pickle is None or not HfApi().file_exists(repo_id, pickle, revision=revision):
        names = ' nor '.join(dict.fromkeys([*safe, *([pickle] if pickle else [])]))
        raise ModelLoadError(f'{where} has no weights: neither {names} is in the repo')
    _refuse_pickle(f'{where}:{pickle}', allow_pickle)
    return Path(hf_hub_download(repo_id, pickle, revision=revision, cache_dir=cache_dir, library_name='timm')), True


def _folder_weights(folder: Path, allow_pickle: bool) -> tuple[Path, bool]:
    if (folder / WEIGHTS_NAME).is_file():
        return folder / WEIGHTS_NAME, False
    pickles = sorted(p for p in folder.iterdir() if p.is_file() and _is_pickle(p.name)) if folder.is_dir() else []
    if not pickles:
        raise ModelLoadError(f'{folder} has no weights: expected {WEIGHTS_NAME} (or, with allow_pickle, a pickle)')
    preferred = folder / PICKLE_WEIGHTS_NAME
    path = preferred if preferred in pickles else pickles[0]
    _refuse_pickle(str(path), allow_pickle)
    return path, True


def _is_pickle(name: str) -> bool:
    return name.endswith(_PICKLE_SUFFIXES)


def _refuse_pickle(label: str, allow_pickle: bool) -> None:
    if not allow_pickle:
        raise PickleRefusedError(
            f'{label} is a pickle, the only weights there, and a pickle can run code when loaded: it was not loaded. '
            f'Expected {WEIGHTS_NAME}. Pass allow_pickle=True to load it with torch.load(weights_only=True), which '
            'refuses anything but tensors, or re-save it with timm.models.save_for_hf(..., safe_serialization=True).'
        )
    logger.warning('%s: loading a pickle with torch.load(weights_only=True), as allowed', label)


# ---- checks of a weights file -----------------------------------------------------------------------------------------
def check_safetensors(path: str | os.PathLike, *, name: str | None = None, sha256: str | None = None) -> int:
    """Check that ``path`` is a complete safetensors file; returns its tensor count.

    Reading the header catches truncation and garbage (safetensors requires the header's offsets to
    cover the file exactly); ``sha256``, when known (the Hub's LFS oid), also catches flipped bytes.

    Args:
        path: The file.
        name: How to name the file in errors (e.g. ``org/repo@rev:model.safetensors``); defaults to ``path``.
        sha256: Expected content hash, hex.

    Raises:
        CorruptWeightsError: The file is not a complete, intact safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    label = name or str(path)
    if not path.is_file():
        raise CorruptWeightsError(f'{label}: weights file not found at {path}')
    size = path.stat().st_size
    try:
        with safe_open(str(path), framework='pt') as f:
            n = len(list(f.keys()))
    except (SafetensorError, OSError, ValueError) as e:
        raise CorruptWeightsError(
            f'{label} is not a valid safetensors file ({size} bytes): {e}. It is truncated or corrupted; '
            're-export it (timm.models.save_for_hf(..., safe_serialization=True)) or download it again.'
        ) from None
    if sha256 is not None and sha256_file(path) != sha256:
        raise CorruptWeightsError(
            f'{label} ({size} bytes) does not match its recorded sha256 {sha256}: the file is corrupted; '
            'download it again (force_download=True).'
        )
    return n


def scan_weights(path: str | os.PathLike, *, name: str | None = None, pickle: bool = False) -> dict[str, torch.dtype]:
    """Read every tensor of a weights file once and refuse NaN/inf values; returns each tensor's dtype.

    Args:
        path: A safetensors file, or (``pickle=True``) a PyTorch state dict read with ``torch.load(weights_only=True)``.
        name: How to name the file in errors; defaults to ``path``.
        pickle: The file is a pickle (the caller has allowed it).

    Raises:
        CorruptWeightsError: A tensor holds NaN or inf.
        PickleRefusedError: The pickle holds more than tensors (``weights_only=True`` refused it).
    """
    label = name or str(path)
    if pickle:
        tensors = dict(_tensor_items(_torch_load(Path(path), label)))
        _check_finite(tensors.items(), label)
        return {k: t.dtype for k, t in tensors.items()}
    from safetensors import safe_open

    dtypes = {}
    with safe_open(str(path), framework='pt') as f:
        for key in f.keys():  # one tensor at a time: no second copy of the whole model in memory
            tensor = f.get_tensor(key)
            _check_finite([(key, tensor)], label)
            dtypes[key] = tensor.dtype
    return dtypes


def check_dtypes(dtypes: Mapping[str, torch.dtype], model: nn.Module, *, name: str) -> None:
    """Refuse weights stored as integers (or bool, complex) where ``model`` has a floating-point tensor.

    A checkpoint re-saved as int64 loads silently otherwise: ``load_state_dict`` casts it to the model's dtype. Other
    floating-point widths are accepted (fp16/bf16 exports are a storage choice; timm casts them on load).

    Args:
        dtypes: ``{tensor name: dtype}`` of the weights file (``scan_weights``).
        model: The model they are for; tensors it does not have are not compared.
        name: How to name the weights file in errors.

    Raises:
        CorruptWeightsError: Naming the first tensors whose dtype cannot hold the model's values.
    """
    expected = {k.removeprefix('module.'): v.dtype for k, v in model.state_dict().items()}
    stored = {k.removeprefix('module.'): d for k, d in dtypes.items() if k.removeprefix('module.') in expected}
    wrong = [
        f'{k} ({d} where the model has {expected[k]})'
        for k, d in stored.items()
        if expected[k].is_floating_point and not d.is_floating_point
    ]
    if wrong:
        more = f' and {len(wrong) - 3} more' if len(wrong) > 3 else ''
        raise CorruptWeightsError(
            f'{name}: {", ".join(wrong[:3])}{more}: expected floating-point weights. The file was re-saved with '
            'the wrong dtype or is corrupted; re-export it from the trained model.'
        )
    other = sorted({str(d) for k, d in stored.items() if d.is_floating_point and d != expected[k]})
    if other:
        logger.info('%s stores %s weights; they are cast to the model dtype on load', name, ', '.join(other))


def _check_finite(items: Any, label: str) -> None:
    for key, t in items:
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise CorruptWeightsError(
                    f'{label}: tensor {key!r} {tuple(t.shape)} holds {bad} NaN/inf value(s) of {t.numel()}: expected '
                    'finite weights. They come from a diverged run or a broken export; re-export a good checkpoint.'
                )


def _tensor_items(obj: Any, prefix: str = '') -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a state dict, unwrapped the way timm's ``load_state_dict`` unwraps a training checkpoint."""
    if isinstance(obj, Mapping):
        for key in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
            if isinstance(obj.get(key), Mapping) and not prefix:
                yield from _tensor_items(obj[key], prefix)
                return
        for key, value in obj.items():
            if isinstance(value, torch.Tensor):
                yield f'{prefix}{key}', value
            elif isinstance(value, Mapping):
                yield from _tensor_items(value, f'{prefix}{key}.')


def _torch_load(path: Path, label: str) -> Any:
    import pickle

    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        raise PickleRefusedError(
            f'{label}: torch.load(weights_only=True) refused it: the pickle holds objects other than tensors, which '
            f'could run code ({str(e).splitlines()[0]}). It was not loaded; do not load it with weights_only=False '
            'unless you trust whoever made it.'
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CorruptWeightsError(f'{label} is not a readable PyTorch checkpoint: {e}') from None


def _verify(path: Path, label: str, pickle: bool) -> dict[str, torch.dtype]:
    """Structure and hash (safetensors), then every value; returns the tensors' dtypes."""
    # the Hub cache names an LFS blob by its sha256, so corruption after download is caught too
    blob = path.resolve().name
    sha256 = blob if re.fullmatch(r'[0-9a-f]{64}', blob) else None
    if pickle:
        if sha256 is not None and sha256_file(path) != sha256:
            raise CorruptWeightsError(f'{label} does not match its recorded sha256 {sha256}: download it again')
    else:
        check_safetensors(path, name=label, sha256=sha256)
    return scan_weights(path, name=label, pickle=pickle)
