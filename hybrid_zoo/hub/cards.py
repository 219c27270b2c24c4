"""Model cards rendered from result files: one per trained checkpoint, one per architecture.

The template is ``model_cards/template.md`` (Jinja2); the YAML header comes from
``huggingface_hub.ModelCardData`` (``model-index`` via ``EvalResult``). No number is typed into a card:
a trained card reads ``config.json``, ``results.json`` and ``train_args.json`` of the model folder and
measures params/GMACs on the model its config builds; architecture cards read
``model_cards/results/model_stats.json`` and, when present, ``bench-cpu.json`` and ``fmnist-cpu64.json`` beside it.

Regenerate the architecture cards::

    python -m hybrid_zoo.hub.cards architectures --stats model_cards/results/model_stats.json --out model_cards
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import timm
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hybrid_zoo import __doc__ as package_doc
from hybrid_zoo import __version__
from hybrid_zoo.atomic import sha256_file
from hybrid_zoo.factory import build_from_folder
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo.models.variants import measured_on_current
from hybrid_zoo.run_files import (
    CONFIG_NAME,
    CONFUSION_MATRIX,
    EVAL_RESULTS,
    MODEL_DIR,
    RESULTS,
    TRAIN_ARGS,
    TRAINING_CURVES,
    WEIGHTS_NAME,
)

if TYPE_CHECKING:
    from huggingface_hub import ModelCard
    from torch import nn

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).resolve().parent / 'templates' / 'model_card.md'  # model_cards/template.md links here
BASE_TAGS = ('image-classification', 'timm', 'hybrid_zoo')
# datasets whose Hub id differs from the name a training run records
HUB_DATASET_IDS = {
    'fashion_mnist': 'zalando-datasets/fashion_mnist',
    'fashion-mnist': 'zalando-datasets/fashion_mnist',
    'fmnist': 'zalando-datasets/fashion_mnist',
}
PLOTS = {TRAINING_CURVES: 'Training curves', CONFUSION_MATRIX: 'Confusion matrix'}
# optional result files beside model_stats.json: file -> (section title, dataset its top1/top5 were measured on)
# optional result file -> (card section title, dataset of its accuracies or None, keys shown (None = all))
EXTRA_RESULTS = {
    'fmnist-cpu64.json': (
        'Fashion-MNIST (CPU protocol: 64 px, grayscale, seeded 5,000-image training subset, 6 epochs; test split)',
        'fashion_mnist',
        ('top1', 'top1_std', 'top5', 'seeds', 'params_m', 'gmacs', 'train_img_per_s'),
    ),
    'fmnist-front96.json': (
        'Fashion-MNIST (front yardstick: 96 px, grayscale, class-balanced 6,000-image training subset, 5 epochs, the '
        "same recipe as the peers of the accuracy-speed front in the repository's docs/reports/front.md; test split)",
        'fashion_mnist',
        ('top1', 'top1_std', 'top5', 'seeds', 'params_m', 'gmacs', 'train_img_per_s'),
    ),
    'fmnist-long64.json': (
        'Fashion-MNIST (long protocol: 64 px, grayscale, all 60,000 training images, 12 epochs with RandAugment, '
        'mixup and EMA; test split)',
        'fashion_mnist',
        ('top1', 'top5', 'seeds', 'train_img_per_s', 'train_time_s'),
    ),
    'fmnist-long64x.json': (
        'Fashion-MNIST (long protocol continued: the long64 run, then 4 more epochs from its weights with a fresh cosine '
        'from lr 5e-4; test split)',
        'fashion_mnist',
        ('top1', 'top5', 'seeds', 'train_img_per_s', 'train_time_s'),
    ),
    'fmnist-gpu64.json': (
        'Fashion-MNIST (GPU protocol: 64 px, grayscale, all 60,000 training images, bf16; test split)',
        'fashion_mnist',
        ('top1', 'top5', 'train_img_per_s', 'train_time_s'),
    ),
    'int8-fmnist.json': (
        'int8 on CPU: the published Fashion-MNIST weights quantized by ONNX Runtime (static QDQ, calibrated on 256 '
        'training images) and by PyTorch PT2E (x86 inductor quantizer, same images), fp32 vs int8 on the 10,000 test '
        'images (`hybrid-zoo export --int8 --record`)',
        None,
        ('weights', 'fp32_top1', 'int8_top1', 'top1_change', 'top1_agreement', 'pt2e_int8_top1', 'pt2e_top1_change',
         'pt2e_top1_agreement', 'images', 'file_mb'),  # fmt: skip
    ),
    'bench-cpu.json': (
        'CPU speed (fp32, batch 32 at 224 px, best layout, folded)',
        None,
        ('infer_img_s', 'latency_ms', 'train_img_s', 'gflops', 'pct_onednn', 'best_layout'),
    ),
    'profile-cpu.json': (
        'What caps its CPU speed (`hybrid-zoo profile`: inference batch 32, training step batch 16, 224 px)',
        None,
        (
            'infer_pct', 'infer_ceiling_pct', 'infer_shape_ceiling_pct', 'infer_attention_pct', 'infer_depthwise_pct',
            'infer_activation_pct', 'train_pct', 'train_ceiling_pct', 'train_shape_ceiling_pct',
            'train_attention_pct', 'train_depthwise_pct', 'backward_over_forward',
        ),
    ),
}  # fmt: skip

# A local path in a published file only shows the machine's layout (user names, mounts): '<local>/<last part>'.
# Absolute POSIX paths (also '~/...' and after 'local-dir:'), Windows drive paths; not URLs, Hub ids or relative names.
LOCAL_PATH_MARKER = '<local>'
_PATH_CHARS = r"""[^\s'"`<>|,;()\[\]{}]"""
_LOCAL_PATH = re.compile(
    rf'(?<![\w.~/\\>-])~?/(?={_PATH_CHARS})(?!/){_PATH_CHARS}*'  # /abs/path, ~/path; '//' (URLs) never starts one
    rf'|(?<!\w)[A-Za-z]:[\\/]+{_PATH_CHARS}*'  # C:\path (also JSON-escaped C:\\path)
)

# how a result key reads in a card table; other keys appear as they are
KEY_NAMES = {
    'top1': 'top-1 accuracy (%)',
    'top1_std': 'top-1 spread over seeds (std, points)',
    'top5': 'top-5 accuracy (%)',
    'num_samples': 'evaluated images',
    'seeds': 'training seeds',
    'params_m': 'params (M)',
    'gmacs': 'GMACs at the recipe size',
    'train_img_per_s': 'training images/s',
    'train_time_s': 'training time (s)',
    'infer_img_s': 'inference images/s',
    'latency_ms': 'batch-1 latency (ms)',
    'train_img_s': 'training images/s (batch 16)',
    'gflops': 'achieved GFLOP/s',
    'pct_onednn': '% of the oneDNN 1x1-conv rate',
    'best_layout': 'fastest memory layout',
    'infer_pct': 'inference: % of the 1x1-conv rate reached',
    'infer_ceiling_pct': 'inference ceiling: % with every GEMM at the 1x1 rate',
    'infer_shape_ceiling_pct': "inference shape ceiling: % with every GEMM at its own shape's rate",
    'infer_attention_pct': 'inference: attention share of the time (%)',
    'infer_depthwise_pct': 'inference: depthwise-conv share (%)',
    'infer_activation_pct': 'inference: activation share (%)',
    'train_pct': 'training step: % of the 1x1-conv rate reached',
    'train_ceiling_pct': 'training ceiling: % with every GEMM at the 1x1 rate',
    'train_shape_ceiling_pct': "training shape ceiling: % with every GEMM at its own shape's rate",
    'train_attention_pct': 'training: attention share of the step (%)',
    'train_depthwise_pct': 'training: depthwise-conv share (%)',
    'backward_over_forward': 'training: backward time / forward time',
    'fp32_top1': 'fp32 top-1 (%)',
    'int8_top1': 'int8 top-1, ONNX Runtime (%)',
    'top1_change': 'ONNX Runtime int8 minus fp32 top-1 (points)',
    'top1_agreement': 'fp32 and ONNX Runtime int8 pick the same class (%)',
    'images': 'test images',
    'file_mb': 'int8 ONNX file (MB)',
    'pt2e_int8_top1': 'int8 top-1, PT2E (%)',
    'pt2e_top1_change': 'PT2E int8 minus fp32 top-1 (points)',
    'pt2e_top1_agreement': 'fp32 and PT2E int8 pick the same class (%)',
}
# template fields a kind of card may leave out
_OPTIONAL_FIELDS = {
    'training_rows': [], 'training_summary': '', 'result_rows': [], 'results_summary': '', 'per_class_header': [],
    'per_class_rows': [], 'extra_sections': [], 'plots': [], 'num_classes': None, 'topk': None, 'pil_mode': None,
}  # fmt: skip


def fmt(value: Any) -> str:
    """A number as a card shows it: ints with separators, floats to 2 decimals (4 significant if small)."""
    if not _is_number(value):
        if isinstance(value, list | tuple):
            return ' x '.join(map(fmt, value)) if all(isinstance(v, int) for v in value) else ', '.join(map(fmt, value))
        return '' if value is None else str(value)
    if isinstance(value, int):
        return f'{value:,d}'
    return f'{value:.2f}' if abs(value) >= 1 or value == 0 else f'{value:.4g}'


def _strides(strides: list[int]) -> str:
    return ', '.join(str(s) for s in strides)


def _attention_text(attention_stages: list[int], strides: list[int] | None, attn_every: int = 1) -> str:
    """'attention in stages 3-4 (output strides 16, 32)' from 1-based stage numbers."""
    stages = list(attention_stages)
    if not stages:
        return 'no attention stages'
    span = f'stage {stages[0]}' if len(stages) == 1 else f'stages {stages[0]}-{stages[-1]}'
    if strides and max(stages) <= len(strides):
        span += f' (output stride{"s" if len(stages) > 1 else ""} {_strides([strides[s - 1] for s in stages])})'
    if attn_every > 1:
        nth = {2: 'second', 3: 'third'}.get(attn_every, f'{attn_every}th')
        span = f'every {nth} block of {span}, conv blocks between'
    return f'convolution stages first, attention in {span}'


def _hybrid_zoo_variant(arch: str, model_args: dict | None = None) -> dict | None:
    """fusion, size, attention stages and architecture version of a hybrid_zoo architecture built with
    ``model_args`` (a config's), from its variant table."""
    try:
        from hybrid_zoo.models.variants import ARCH_VERSION, FIRST_ATTENTION_STAGE, SIZE_OF, VARIANTS, VARIANTS_V1
    except ImportError:
        return None
    cfg = VARIANTS.get(arch)
    if cfg is None:
        return None
    fields = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in (model_args or {}).items()
        if k in cfg.__dataclass_fields__
    }
    built = replace(cfg, **fields)
    version = ARCH_VERSION if built == cfg else 1 if built == VARIANTS_V1[arch] else None
    first = FIRST_ATTENTION_STAGE[built.fusion]
    return {
        'fusion': built.fusion,
        'size': SIZE_OF[arch],
        'attention_stages': list(range(first + 1, len(built.depths) + 1)),
        'attn_every': built.attn_every,
        'architecture': f'architecture v{version}' if version else 'a custom architecture',
    }


def _package_fields(origin_url: str | None) -> dict[str, str]:

    origin_url = origin_url or 'https://pypi.org/project/hybrid_zoo/'
    source = f' @ git+{origin_url}' if origin_url.startswith(('https://github.com/', 'https://gitlab.com/')) else ''
    return {
        'package_title': (package_doc or 'hybrid_zoo').strip().splitlines()[0].rstrip('.'),
        'package_version': __version__,
        'origin_url': origin_url,
        'install_command': f'pip install "hybrid_zoo[hub]{source}"',
    }


def _render(card_data: Any, template: str | os.PathLike | None, **fields: Any) -> ModelCard:

    source = Path(template or TEMPLATE)
    if not source.is_file():
        raise FileNotFoundError(f'model card template not found at {source}: pass template= or run from a checkout')
    env = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    fields = {**_OPTIONAL_FIELDS, **fields, 'card_data': card_data.to_yaml()}
    text = env.from_string(source.read_text(encoding='utf-8')).render(**fields)
    while '\n\n\n' in text:  # optional sections leave blank runs behind
        text = text.replace('\n\n\n', '\n\n')
    return ModelCard(text)


def redact_local_paths(value: Any) -> Any:
    """``value`` with every local filesystem path replaced by ``<local>/<last part>``, for publishing.

    A training run records where its data and outputs were (``dataset``, ``output_dir``, ``--pretrained`` folders);
    on the Hub those paths mean nothing to a reader and only reveal the machine. Hub ids (``org/name``), URLs and
    relative names are kept.

    Args:
        value: A string (any text: a path alone, or JSON / YAML holding paths), or a dict / list of them.

    Returns:
        The same kind of value; numbers and other objects come back unchanged.
    """
    if isinstance(value, str):
        return _LOCAL_PATH.sub(_marker, value)
    if isinstance(value, dict):
        return {k: redact_local_paths(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_local_paths(v) for v in value)
    return value


def _marker(match: re.Match) -> str:
    name = re.split(r'[\\/]+', match.group().rstrip('\\/'))[-1]
    return f'{LOCAL_PATH_MARKER}/{name}' if name and name != '~' else LOCAL_PATH_MARKER


def _hub_dataset(name: str | None) -> str | None:
    """The Hub dataset id for ``datasets:``, when the recorded name is one (or has a known id)."""
    if not name or LOCAL_PATH_MARKER in str(name):
        return None
    name = str(name)
    if name in HUB_DATASET_IDS:
        return HUB_DATASET_IDS[name]
    parts = name.split('/')
    return name if len(parts) == 2 and not name.startswith(('.', '/')) and not os.path.exists(name) else None


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def held_out_scores(folder: Path, train_args: dict) -> list[dict]:
    """The ``hybrid-zoo eval`` results that may enter a trained folder's ``model-index``.

    ``eval_results.json`` in the model folder or its run folder (``hybrid-zoo eval --output-dir <run>``) counts when
    it was measured on exactly these weights (its ``weights_sha256``) and on a split that chose nothing: not the
    training split (whose share was carved for validation) and not a validation split the run named. Anything else
    is left out, and the log says why.
    """
    out = []
    weights = folder / WEIGHTS_NAME
    for path in dict.fromkeys([folder / EVAL_RESULTS, folder.parent / EVAL_RESULTS]):
        scores = _read_json(path)
        if not scores or not weights.is_file():
            continue
        chose = {train_args.get('train_split') or 'train', train_args.get('val_split')} - {None}
        if scores.get('weights_sha256') != sha256_file(weights):
            logger.info('%s left out of the card: measured on other weights than %s', path.name, weights.name)
        elif str(scores.get('split')) in chose:
            logger.info('%s left out of the card: split %r trained or chose the model', path.name, scores.get('split'))
        elif scores.get('dataset') and _is_number(scores.get('top1')):
            out.append(scores)
    return out


def _eval_results(metrics: dict, dataset: str, split: str, protocol: str | None = None) -> list:
    """``model-index`` entries (``EvalResult``) for the top-1/top-5 accuracies in ``metrics``.

    ``protocol`` tells apart results on the same dataset and split (``Top-1 accuracy (long64)``).
    """

    suffix = f' ({protocol})' if protocol else ''

    return [
        EvalResult(
            task_type='image-classification',
            task_name='Image Classification',
            dataset_type=_hub_dataset(dataset) or dataset,
            dataset_name=dataset,
            dataset_split=split,
            metric_type='accuracy',
            metric_name=name + suffix,
            metric_value=metrics[key],
        )
        for key, name in (('top1', 'Top-1 accuracy'), ('top5', 'Top-5 accuracy'))
        if _is_number(metrics.get(key))
    ]


def _card_data(
    name: str,
    *,
    license: str,
    fusion: str | None,
    eval_results: list,
    datasets: list[str],
    base_model: str | None = None,
) -> Any:
    """The YAML header: what the Hub reads to list, filter and show the model."""

    return ModelCardData(
        library_name='timm',
        pipeline_tag='image-classification',
        license=license,
        tags=[*BASE_TAGS, *([f'{fusion}-fusion'] if fusion else [])],  # never 'transformers': it cannot build these
        datasets=datasets or None,
        base_model=base_model,
        metrics=['accuracy'] if eval_results else None,
        model_name=name if eval_results else None,  # model-index is keyed by it; alone it is no Hub field
        eval_results=eval_results or None,
    )


# ---- trained checkpoints ----------------------------------------------------------------------------
_MEASURED: dict[str, dict[str, Any]] = {}  # measurements depend on the config only, not on the weights


def measure(model: nn.Module, input_size: tuple[int, int, int]) -> dict[str, Any]:
    """Params, GMACs (attention included), feature strides and width of ``model`` at ``input_size``."""

    macs = count_macs(model, tuple(input_size))
    info = getattr(model, 'feature_info', None)
    strides = [f['reduction'] for f in info] if isinstance(info, list) else info.reduction() if info else []
    return {
        'params_m': count_params(model) / 1e6,
        'gmacs': macs.gmacs,
        'attention_gmacs': macs.attention_gmacs,
        'input_size': list(input_size),
        'feature_strides': strides,
        'num_features': getattr(model, 'num_features', None),
    }


def render_card(
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    license: str = 'apache-2.0',
    base_model: str | None = None,
    model: nn.Module | None = None,
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """The model card of a trained model folder (``config.json``, ``model.safetensors``, results, args, plots).

    Args:
        folder: A model folder as written by training (``<out>/model``) or ``timm.models.save_for_hf``.
        repo_id: The Hub repo the card is for (used in the usage snippet and title).
        license: Hub license id.
        base_model: Hub id of the model this one was fine-tuned from; default from ``train_args.json``
            (``base_model``, or a ``model`` given as ``hf-hub:...``).
        model: The model ``config.json`` builds, if already built (saves building it again).
        template: Jinja template; default ``model_cards/template.md``.

    Returns:
        A ``huggingface_hub.ModelCard``; ``str(card)`` is the README, ``card.save(path)`` writes it.
    """
    folder = Path(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    # a card is published: the local paths a run records are replaced (redact_local_paths)
    results = redact_local_paths(_read_json(folder / RESULTS) or {})
    train_args = redact_local_paths(_read_json(folder / TRAIN_ARGS) or {})
    pcfg = config.get('pretrained_cfg', {})
    arch = config['architecture']
    input_size = pcfg.get('input_size') or [3, 224, 224]
    key = json.dumps([arch, config.get('model_args'), config.get('num_classes'), input_size], sort_keys=True)
    if key not in _MEASURED:  # a second push of the same architecture and config skips the FLOP count
        if model is None:
            model = build_from_folder(folder)
        _MEASURED[key] = measure(model, input_size)
    stats = _MEASURED[key]
    variant = _hybrid_zoo_variant(arch, config.get('model_args'))
    fusion = (config.get('model_args') or {}).get('fusion') or (variant or {}).get('fusion')
    labels = config.get('label_names') or []
    num_classes = config.get('num_classes', len(labels))
    dataset = results.get('dataset') or train_args.get('dataset')
    split = str(results.get('split', 'test'))
    # a training run's accuracy chose its checkpoint: it is reported as such, never as a held-out model-index score
    chose_checkpoint = 'val_source' in results
    base_model = base_model or train_args.get('base_model')
    if not base_model and str(train_args.get('model', '')).startswith(('hf-hub:', 'hf_hub:')):
        base_model = str(train_args['model']).split(':', 1)[1]
    eval_results = _eval_results(results, str(dataset), split) if dataset and not chose_checkpoint else []
    for held_out in held_out_scores(folder, train_args):
        eval_results += _eval_results(held_out, str(held_out['dataset']), str(held_out['split']))
    card_data = _card_data(
        repo_id or arch, license=license, fusion=fusion, eval_results=eval_results,
        datasets=[d for d in [_hub_dataset(dataset)] if d], base_model=base_model,
    )  # fmt: skip

    summary = f'An image classifier from hybrid_zoo: `{arch}`'
    if dataset:
        summary += f' trained on **{dataset}**'
    if _is_number(results.get('top1')):
        n = results.get('num_samples')
        images = f' ({fmt(n)} images)' if n else ''
        if chose_checkpoint:
            summary += (
                f', **{fmt(results["top1"])} % validation top-1**{images} on {results["val_source"]}; these rows chose'
                ' the checkpoint, so this is not a held-out test score'
            )
        else:
            summary += f', **{fmt(results["top1"])} % top-1** on its {split} split{images}'
    summary += '.'
    if variant:
        attention = _attention_text(variant['attention_stages'], stats['feature_strides'], variant['attn_every'])
        summary += (
            f' The architecture is the {variant["size"]} ConvFormer-fusion model with {fusion} fusion'
            f' ({variant["architecture"]}): {attention}.'
        )
    if base_model:
        summary += f' Fine-tuned from [{base_model}](https://huggingface.co/{base_model}).'

    # hyper-parameters exactly as recorded (0.002, 1e-05, true): rounding would change what they say
    training_rows = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in train_args.items() if v is not None]
    result_rows = [(name, fmt(results[key])) for key, name in KEY_NAMES.items() if key in results]
    result_rows += [(k, fmt(v)) for k, v in results.items() if k not in KEY_NAMES and _is_number(v)]
    per_class_header, per_class_rows = _per_class(results.get('per_class'), labels)
    in_chans = input_size[0]
    return _render(
        card_data,
        template,
        title=repo_id or arch,
        summary=summary,
        repo_id=repo_id,
        architecture=arch,
        num_classes=num_classes,
        topk=min(5, num_classes) if num_classes else 1,
        pil_mode='L' if in_chans == 1 else 'RGB',
        feature_strides=_strides(stats['feature_strides']),
        num_features=stats['num_features'],
        io_rows=_io_rows(pcfg, input_size, num_classes, labels),
        stats_note=f'Measured on this checkpoint at input size {fmt(input_size)} (batch 1; 1 MAC = 2 FLOPs; attention included).',
        stats_rows=_stats_rows(stats),
        training_rows=training_rows,
        training_summary=_training_summary(train_args, dataset),
        result_rows=result_rows,
        results_summary=f'On the **{split}** split of **{dataset}**.' if dataset else '',
        per_class_header=per_class_header,
        per_class_rows=per_class_rows,
        plots=[(alt, name) for name, alt in PLOTS.items() if (folder / name).is_file()],
        **_package_fields(pcfg.get('origin_url')),
    )


def _io_rows(pcfg: dict, input_size: list[int], num_classes: int, labels: list[str]) -> list[tuple[str, str]]:
    """The input/output contract of a trained checkpoint, from its pretrained cfg."""
    in_chans = input_size[0]
    rows = [
        ('input', f'float tensor (B, {in_chans}, {input_size[1]}, {input_size[2]}), '
                  f'{"grayscale" if in_chans == 1 else "RGB"}, normalised with mean {fmt(pcfg.get("mean"))} '
                  f'and std {fmt(pcfg.get("std"))}'),
        ('preprocessing', f'resize ({pcfg.get("interpolation", "bilinear")}) and center crop '
                          f'{fmt(pcfg.get("crop_pct"))}, as `timm.data.create_transform(**resolve_model_data_config(model))` does'),
        ('output', f'logits (B, {num_classes}); softmax for probabilities'),
    ]  # fmt: skip
    if labels:
        rows.append(('labels', ', '.join(f'{i}: {name}' for i, name in enumerate(labels))))
    return rows


def _stats_rows(stats: dict) -> list[tuple[str, str]]:
    rows = [
        ('params (M)', fmt(stats.get('params_m'))),
        ('GMACs', fmt(stats.get('gmacs'))),
        ('attention GMACs', fmt(stats.get('attention_gmacs'))),
        ('input size', fmt(stats.get('input_size'))),
        ('feature strides', _strides(stats.get('feature_strides') or [])),
        ('pooled features', fmt(stats.get('num_features'))),
    ]
    for key, name in (('depths', 'blocks per stage'), ('widths', 'channels per stage')):
        if key in stats:
            rows.append((name, ', '.join(map(str, stats[key]))))
    return [(k, v) for k, v in rows if v]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _training_summary(args: dict, dataset: str | None) -> str:
    """One sentence from the usual keys; the full table follows it in the card."""
    parts = []
    if 'epochs' in args:
        parts.append(f'{fmt(args["epochs"])} epochs')
    for key, name in (
        ('opt', 'optimizer'),
        ('optimizer', 'optimizer'),
        ('lr', 'learning rate'),
        ('batch_size', 'batch size'),
        ('weight_decay', 'weight decay'),
        ('sched', 'schedule'),
        ('img_size', 'image size'),
    ):
        if key in args:
            parts.append(f'{name} {fmt(args[key])}')
    if not parts:
        return 'Training arguments as recorded by the run:'
    data = f' on {dataset}' if dataset else ''
    return f'Trained{data} for ' + ', '.join(parts) + ' (all arguments below).'


def _per_class(per_class: Any, labels: list[str]) -> tuple[list[str], list[list[str]]]:
    """Table of per-class results; accepts {label: value}, {label: {metric: value}} or a list by class index."""
    if not per_class:
        return [], []
    if isinstance(per_class, list):
        per_class = {labels[i] if i < len(labels) else str(i): v for i, v in enumerate(per_class)}
    first = next(iter(per_class.values()))
    if isinstance(first, dict):
        metrics = list(first)
        return ['class', *metrics], [[str(name), *(fmt(v.get(m)) for m in metrics)] for name, v in per_class.items()]
    return ['class', 'accuracy (%)'], [[str(name), fmt(v)] for name, v in per_class.items()]


# ---- architecture cards -----------------------------------------------------------------------------
def _models_of(results: dict | None) -> dict[str, dict]:
    if not results:
        return {}
    if isinstance(results.get('models'), list):  # profile-cpu.json: one entry per model and pass
        return _profile_rows(results)
    models = results.get('models', {k: v for k, v in results.items() if k != 'meta'})
    return {k: v for k, v in models.items() if isinstance(v, dict)}


def _profile_rows(profile: dict) -> dict[str, dict]:
    """``{model: flat row}`` of ``profile-cpu.json``: reached %, ceilings and the main non-GEMM shares."""
    rows: dict[str, dict] = {}
    for prefix, entries in (('infer', profile.get('models') or []), ('train', profile.get('training') or [])):
        for p in entries:
            row = rows.setdefault(p['model'], {})
            row[f'{prefix}_pct'] = p['pct_of_reference']
            row[f'{prefix}_ceiling_pct'] = p['ceiling_pct_of_reference']
            row[f'{prefix}_shape_ceiling_pct'] = p.get('shape_ceiling_pct')
            for kind in ('attention', 'depthwise', 'activation'):
                row[f'{prefix}_{kind}_pct'] = p['categories'][kind]['share_pct']
            if 'backward_over_forward' in p:
                row['backward_over_forward'] = p['backward_over_forward']
    return {name: {k: v for k, v in row.items() if v is not None} for name, row in rows.items()}


def _meta_note(meta: dict | None, source: str) -> str:
    """Where a section's numbers come from and how they were measured (the file's ``meta``)."""
    note = f'From `{source}`'
    if meta:
        note += '; ' + ', '.join(f'{k}: {fmt(v)}' for k, v in meta.items() if not isinstance(v, dict))
    return note + '.'


def render_architecture_card(
    name: str,
    stats: dict,
    *,
    meta: dict | None = None,
    extra: dict[str, tuple[dict | None, dict]] | None = None,
    template: str | os.PathLike | None = None,
) -> ModelCard:
    """The card of one registered architecture from its ``model_stats.json`` entry.

    Args:
        name: Architecture name (``convformer_tiny``...).
        stats: Its entry in ``model_stats.json['models']``.
        meta: ``model_stats.json['meta']`` (torch/timm versions, date, machine).
        extra: ``{file name: (its meta, its entry for this architecture)}`` of the optional result files
            (``fmnist-cpu64.json``, ``bench-cpu.json``).
        template: Jinja template; default ``model_cards/template.md``.
    """

    pcfg = timm.models.get_pretrained_cfg(name)
    fusion = stats.get('fusion') or (_hybrid_zoo_variant(name) or {}).get('fusion')
    sections, eval_results, datasets = [], [], []
    for source, (section_meta, entry) in (extra or {}).items():
        title, dataset, keys = EXTRA_RESULTS[source]
        shown = [k for k in keys if k in entry] if keys else [k for k, v in entry.items() if not isinstance(v, dict)]
        rows = [(KEY_NAMES.get(k, k), fmt(entry[k])) for k in shown]
        note = _meta_note(section_meta, f'model_cards/results/{source}')
        sections.append({'title': title, 'note': note, 'rows': rows})
        protocol = source.removesuffix('.json').split('-', 1)[-1]  # fmnist-long64.json -> long64
        split = str(entry.get('split', 'test'))
        if dataset is not None and (measured := _eval_results(entry, dataset, split, protocol)):
            eval_results += measured
            if _hub_dataset(dataset) not in datasets:
                datasets.append(_hub_dataset(dataset))
    license = getattr(pcfg, 'license', None) or 'apache-2.0'
    card_data = _card_data(name, license=license, fusion=fusion, eval_results=eval_results, datasets=datasets)
    strides = stats.get('feature_strides') or []
    summary = f'{name}.'
    if fusion and 'attention_stages' in stats:
        attention = _attention_text(stats['attention_stages'], strides, stats.get('attn_every', 1))
        version = f' (architecture v{stats["architecture_version"]})' if 'architecture_version' in stats else ''
        summary = f'The {stats.get("size", "")} ConvFormer-fusion architecture{version} with **{fusion}** fusion: {attention}.'
    input_size = stats.get('input_size') or (meta or {}).get('input_size') or [3, 224, 224]
    io_rows = [
        ('input', f'float tensor (B, {input_size[0]}, H, W); cards measure at {fmt(input_size)}. '
                  '`in_chans=1` builds a grayscale model'),
        ('output', 'logits (B, num_classes); `num_classes=0` gives pooled features, `features_only=True` '
                   f'one map per stage at strides {_strides(strides)}'),
    ]  # fmt: skip
    return _render(
        card_data,
        template,
        title=name,
        summary=summary,
        repo_id=None,
        architecture=name,
        io_rows=io_rows,
        stats_note=_meta_note(meta, 'model_cards/results/model_stats.json')
        + ' Batch 1; 1 MAC = 2 FLOPs; attention included.',
        stats_rows=_stats_rows(stats),
        extra_sections=sections,
        feature_strides=_strides(strides),
        num_features=stats.get('num_features'),
        **_package_fields(getattr(pcfg, 'origin_url', None)),
    )


def render_architecture_cards(
    stats_json: str | os.PathLike, out_dir: str | os.PathLike, *, template: str | os.PathLike | None = None
) -> list[Path]:
    """Write ``<out_dir>/<name>.md`` for every architecture in ``stats_json`` (``model_stats.json``).

    Sections for ``fmnist-cpu64.json`` and ``bench-cpu.json`` (``{"meta": {...}, "models": {name: {...}}}``,
    next to ``stats_json``) are added only when those files exist and list the architecture.

    Returns:
        The written paths, in the stats file's order.
    """
    stats_json = Path(stats_json)
    data = json.loads(stats_json.read_text())
    extra_files = {file: _read_json(stats_json.parent / file) for file in EXTRA_RESULTS}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stats in _models_of(data).items():
        extra = {  # a measurement of an architecture that has changed since is left out
            file: (content.get('meta'), _models_of(content)[name])
            for file, content in extra_files.items()
            if name in _models_of(content) and measured_on_current(name, _models_of(content)[name])
        }
        path = out_dir / f'{name}.md'
        render_architecture_card(name, stats, meta=data.get('meta'), extra=extra, template=template).save(path)
        written.append(path)
    logger.info('wrote %d architecture cards to %s', len(written), out_dir)
    return written


# ---- command line -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m hybrid_zoo.hub.cards', description='Render model cards from result files.'
    )
    sub = p.add_subparsers(dest='kind', required=True)
    a = sub.add_parser('architectures', help='one card per architecture from model_stats.json')
    a.add_argument('--stats', default='model_cards/results/model_stats.json', help='stats file (default: %(default)s)')
    a.add_argument('--out', default='model_cards', help='output folder (default: %(default)s)')
    t = sub.add_parser(
        'trained', help='the card of a trained model folder (what `hybrid-zoo push` uploads as README.md)'
    )
    t.add_argument('folder', help=f'training output folder (with {MODEL_DIR}/) or the model folder')
    t.add_argument('--repo-id', required=True, help="the repo the card is for, 'namespace/name'")
    t.add_argument('--out', required=True, help='file to write the card to')
    t.add_argument('--license', default='apache-2.0', help='license id (default: %(default)s)')
    t.add_argument('--base-model', default=None, help='Hub id of the model this one was fine-tuned from')
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    if args.kind == 'architectures':
        for path in render_architecture_cards(args.stats, args.out):
            print(path)
        return 0
    folder = Path(args.folder)
    folder = folder / MODEL_DIR if (folder / MODEL_DIR / CONFIG_NAME).is_file() else folder
    render_card(folder, repo_id=args.repo_id, license=args.license, base_model=args.base_model).save(args.out)
    print(args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
