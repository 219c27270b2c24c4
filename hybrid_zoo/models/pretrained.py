"""Published weights: the pretrained tags registered next to each architecture's untagged entry.

A tag is ``<architecture>.<tag>`` with ``hf_hub_id='<HUB_ORG>/<architecture>.<tag>'``, so
``timm.create_model('convformer_tiny_late.fmnist_64', pretrained=True)`` downloads ``model.safetensors`` from
that repo (through ``HF_ENDPOINT``, so a local Hub server serves it as well as huggingface.co) and builds the
model its cfg describes: here 1 input channel, 10 classes, 64 px. The weights are each model's run with the best
validation top-1 (carved from train) in the Fashion-MNIST comparison; ``hybrid-zoo compare --publish`` pushes them.

Before timm downloads a tag's weights, ``check_weights_reachable`` looks once (local cache, then one HEAD
request with a short timeout): weights that are nowhere to be found fail in seconds with
``PretrainedWeightsNotFoundError``, which names the repo and the endpoint and says how to produce or serve them,
instead of timm's tens of seconds of retries ending in ``LocalEntryNotFoundError``.

A tag names exactly one set of weights: its ``hf_hub_id`` carries the commit it was published at
(``<HUB_ORG>/<arch>.<tag>@<commit>``, so timm fetches that commit whatever the repo's ``main`` holds now, and the Hub
cache keeps each commit apart), and ``PUBLISHED`` records that commit with the sha256 of its ``model.safetensors``
(``hybrid-zoo compare --publish`` records both in ``model_cards/results/pretrained.json``; a test keeps the two
alike). ``check_weights_reachable`` and the checked loader refuse other weights with
``PretrainedWeightsMismatchError``. A tag published before sha256s were recorded is pinned by its commit alone.

timm makes a tag with weights the architecture's default, which would turn ``create_model('convformer_tiny')``
into a 1-channel, 10-class model: ``keep_untagged_default`` undoes that, so only an explicit tag (or
``pretrained=True`` on a name whose default has weights, none here) picks these weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..atomic import sha256_file
from ..labels import FASHION_MNIST_CLASSES
from ..normalization import GRAY_MEAN, GRAY_STD
from ..run_files import PICKLE_WEIGHTS_NAME, WEIGHTS_NAME

HUB_ORG = 'hybrid-zoo'
# One HEAD request, no retries: long enough for a slow Hub, short enough to fail fast against a dead endpoint.
PREFLIGHT_TIMEOUT_S = 5.0
# what timm's ``load_state_dict_from_hf`` fetches for a cfg without ``hf_hub_filename``, in its order
WEIGHT_FILES = (WEIGHTS_NAME, PICKLE_WEIGHTS_NAME)

FMNIST_TAG = 'fmnist_64'
# the models trained in the Fashion-MNIST comparison (hybrid-zoo compare), one published tag each
FMNIST_MODELS = ('convformer_tiny_early', 'convformer_tiny', 'convformer_tiny_late')


# tag -> (commit it was published at, sha256 of its model.safetensors or None where not recorded), as
# model_cards/results/pretrained.json records them
PUBLISHED: dict[str, tuple[str, str | None]] = {
    'convformer_tiny_early.fmnist_64': ('da453c5036802d57eb852d85574ec3ac595f2ece', None),
    'convformer_tiny.fmnist_64': ('77278511967c337a3ce9ba1a71b1513f30a2a23c', None),
    'convformer_tiny_late.fmnist_64': ('8ae05b808e0cd91a9e6093e5a18e0ab31094b11e', None),
}


def fmnist_cfg() -> dict:
    """The pretrained-cfg fields of a Fashion-MNIST 64 px tag (architecture-independent)."""
    return {
        'num_classes': len(FASHION_MNIST_CLASSES),
        'input_size': (1, 64, 64),
        'pool_size': (2, 2),
        'mean': GRAY_MEAN,
        'std': GRAY_STD,
        'crop_pct': 0.95,
        'interpolation': 'bicubic',
        'label_names': FASHION_MNIST_CLASSES,
        'description': 'Trained from scratch on Fashion-MNIST (28x28 grayscale, resized to 64 px), 10 classes.',
    }


def pretrained_tags() -> dict[str, dict]:
    """``'<architecture>.<tag>'`` -> cfg fields for every published weight; ``hf_hub_id`` names the repo and the
    commit the tag was published at (``PUBLISHED``)."""
    return {
        f'{m}.{FMNIST_TAG}': dict(
            fmnist_cfg(), hf_hub_id=f'{HUB_ORG}/{m}.{FMNIST_TAG}@{PUBLISHED[f"{m}.{FMNIST_TAG}"][0]}'
        )
        for m in FMNIST_MODELS
    }


def pinned_sha256(pretrained_cfg: dict) -> str | None:
    """The sha256 a registered tag's weights were published with, when its cfg still names the registered repo and
    commit (a caller's overlay naming other weights is the caller's choice) and the sha256 was recorded."""
    name = f'{pretrained_cfg.get("architecture")}.{pretrained_cfg.get("tag")}'
    commit, sha256 = PUBLISHED.get(name, (None, None))
    if commit is None or pretrained_cfg.get('hf_hub_id') != f'{HUB_ORG}/{name}@{commit}':
        return None
    return sha256


def check_pinned_weights(pretrained_cfg: dict, path: str | os.PathLike) -> None:
    """Refuse a downloaded weights file that is not the one a registered tag was published with.

    Raises:
        PretrainedWeightsMismatchError: The file's sha256 differs from the recorded one.
    """
    expected = pinned_sha256(pretrained_cfg)
    if expected is None:
        return
    path = Path(path)
    blob = path.resolve().name  # the Hub cache names an LFS blob by its sha256
    actual = blob if re.fullmatch(r'[0-9a-f]{64}', blob) else sha256_file(path)
    if actual != expected:
        raise PretrainedWeightsMismatchError(_mismatch_message(pretrained_cfg, actual, expected))


def _mismatch_message(pretrained_cfg: dict, actual: str, expected: str) -> str:
    name = f'{pretrained_cfg.get("architecture")}.{pretrained_cfg.get("tag")}'
    return (
        f'{name} names the weights published as {pretrained_cfg.get("hf_hub_id")} with sha256 {expected}, but the Hub '
        f'(or the local cache) holds other weights there (sha256 {actual}): they were not loaded. A registered tag '
        'names exactly one set of weights; load weights of your own by their repo: '
        "timm.create_model('hf-hub:<your-namespace>/<name>', pretrained=True)."
    )


def keep_untagged_default(default_cfgs: dict) -> None:
    """Put each architecture's untagged (ImageNet-shaped, weightless) cfg back in front of its tags."""
    for dc in default_cfgs.values():
        if '' in dc.tags and dc.tags[0] != '':
            dc.tags.remove('')
            dc.tags.appendleft('')


class PretrainedWeightsNotFoundError(RuntimeError):
    """A pretrained tag's weights are neither in the local Hub cache nor reachable through ``HF_ENDPOINT``."""


class PretrainedWeightsMismatchError(PretrainedWeightsNotFoundError):
    """What the Hub or the cache holds for a registered tag is not the weights the tag was published with."""


def check_weights_reachable(pretrained_cfg: dict, cache_dir: str | os.PathLike | None = None) -> None:
    """Fail fast, with directions, when timm could not get a registered tag's weights from the Hub.

    Only a cfg whose weights come from its ``hf_hub_id`` is checked: an explicit ``file`` or ``state_dict`` takes
    priority in timm, and ``hf-hub:`` / ``local-dir:`` names have already read their repo or folder. The local
    cache is looked at first, then the endpoint gets a single HEAD request (``PREFLIGHT_TIMEOUT_S``, no retries);
    when the weights are there, timm's own loading follows unchanged. Needs the ``hub`` extra, imported here
    and only here so that ``import hybrid_zoo`` stays cheap; without it timm raises its own install hint.

    Args:
        pretrained_cfg: The resolved pretrained cfg of the model about to be built with ``pretrained=True``.
        cache_dir: The ``cache_dir`` given to ``timm.create_model``, if any.

    Raises:
        PretrainedWeightsNotFoundError: The weights are not cached and the endpoint is offline, unreachable or
            does not hold them; the message names the repo, the endpoint and how to produce or serve them.
    """
    hf_hub_id = pretrained_cfg.get('hf_hub_id')
    if (
        not hf_hub_id
        or pretrained_cfg.get('source') in ('hf-hub', 'local-dir')
        or pretrained_cfg.get('file')
        or pretrained_cfg.get('state_dict') is not None
    ):
        return
    try:
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        return
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(hf_hub_id)
    files = (pretrained_cfg['hf_hub_filename'],) if pretrained_cfg.get('hf_hub_filename') else WEIGHT_FILES
    for filename in files:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if isinstance(cached, str):
            check_pinned_weights(pretrained_cfg, cached)
            return
    # the URL timm's hf_hub_download will ask (its template is fixed from HF_ENDPOINT when huggingface_hub loads)
    urls = [hf_hub_url(repo_id, filename, revision=revision) for filename in files]
    endpoint = urls[0].split(f'/{repo_id}/resolve/')[0]
    tag = pretrained_cfg.get('tag')
    name = f'{pretrained_cfg.get("architecture")}.{tag}' if tag else str(pretrained_cfg.get('architecture'))

    def not_found(reason: str) -> PretrainedWeightsNotFoundError:
        return PretrainedWeightsNotFoundError(_not_found_message(name, repo_id, revision, endpoint, reason))

    if constants.HF_HUB_OFFLINE:
        raise not_found('HF_HUB_OFFLINE is set and they are not in the local cache')
    expected = pinned_sha256(pretrained_cfg)
    for url in urls:
        try:
            metadata = get_hf_file_metadata(url, timeout=PREFLIGHT_TIMEOUT_S)
        except EntryNotFoundError:
            continue
        except Exception as error:  # refused, timed out, unknown repo or revision: the same way out for the user
            raise not_found(f'{type(error).__name__}: {error}'.strip()) from error
        # an LFS file's etag is its sha256: other weights are refused before they are downloaded
        if expected is not None and metadata.etag and metadata.etag != expected:
            raise PretrainedWeightsMismatchError(_mismatch_message(pretrained_cfg, metadata.etag, expected))
        return
    raise not_found(f'the repo holds none of {", ".join(files)}')


def _not_found_message(name: str, repo_id: str, revision: str | None, endpoint: str, reason: str) -> str:
    where = f'{repo_id}@{revision}' if revision else repo_id
    produce = (
        f'They are produced by `hybrid-zoo compare --publish` (the Fashion-MNIST comparison trains the models and '
        f"pushes each one's best run to {HUB_ORG}/<model>.{FMNIST_TAG}); `hybrid-zoo demo` runs the same "
        'train -> push -> load path end to end on a local Hub server. '
        if repo_id.startswith(f'{HUB_ORG}/')
        else 'Push them there with `hybrid-zoo push <run-dir> ' + repo_id + '`. '
    )
    return (
        f'Pretrained weights for {name} are expected in the Hub repo {where} at {endpoint} (HF_ENDPOINT), but they '
        f'cannot be loaded: {reason}. {produce}To serve them offline, run `hybrid-zoo hub-server --data-dir <dir>` on '
        'a folder that holds the repo and set HF_ENDPOINT=http://127.0.0.1:<port> before importing timm '
        '(huggingface_hub reads it once, at import). Or build the architecture with pretrained=False.'
    )
