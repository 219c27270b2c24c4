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

timm makes a tag with weights the architecture's default, which would turn ``create_model('convformer_tiny')``
into a 1-channel, 10-class model: ``keep_untagged_default`` undoes that, so only an explicit tag (or
``pretrained=True`` on a name whose default has weights, none here) picks these weights.
"""

from __future__ import annotations

import os

from ..labels import FASHION_MNIST_CLASSES
from ..normalization import GRAY_MEAN, GRAY_STD

HUB_ORG = 'hybrid-zoo'
# One HEAD request, no retries: long enough for a slow Hub, short enough to fail fast against a dead endpoint.
PREFLIGHT_TIMEOUT_S = 5.0
# what timm's ``load_state_dict_from_hf`` fetches for a cfg without ``hf_hub_filename``, in its order
WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')

FMNIST_TAG = 'fmnist_64'
# the models trained in the Fashion-MNIST comparison (hybrid-zoo compare), one published tag each
FMNIST_MODELS = ('convformer_tiny_early', 'convformer_tiny', 'convformer_tiny_late')


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
    """``'<architecture>.<tag>'`` -> cfg fields (``hf_hub_id`` included) for every published weight."""
    return {f'{m}.{FMNIST_TAG}': dict(fmnist_cfg(), hf_hub_id=f'{HUB_ORG}/{m}.{FMNIST_TAG}') for m in FMNIST_MODELS}


def keep_untagged_default(default_cfgs: dict) -> None:
    """Put each architecture's untagged (ImageNet-shaped, weightless) cfg back in front of its tags."""
    for dc in default_cfgs.values():
        if '' in dc.tags and dc.tags[0] != '':
            dc.tags.remove('')
            dc.tags.appendleft('')


class PretrainedWeightsNotFoundError(RuntimeError):
    """A pretrained tag's weights are neither in the local Hub cache nor reachable through ``HF_ENDPOINT``."""


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
        if isinstance(try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision), str):
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
    for url in urls:
        try:
            get_hf_file_metadata(url, timeout=PREFLIGHT_TIMEOUT_S)
            return
        except EntryNotFoundError:
            continue
        except Exception as error:  # refused, timed out, unknown repo or revision: the same way out for the user
            raise not_found(f'{type(error).__name__}: {error}'.strip()) from error
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
