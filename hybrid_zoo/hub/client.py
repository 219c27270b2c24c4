"""Publish trained models to the Hugging Face Hub and load them back, in timm's own repo format.

A repo holds ``model.safetensors`` (never a pickle), timm's ``config.json`` (architecture, classes,
label names, preprocessing, constructor args), a ``README.md`` model card rendered from the result
files, the training args and eval results as JSON and YAML, the training log and plots. It loads with
plain timm once the architectures are registered::

    import hybrid_zoo  # registers the convformer_* architectures
    import timm
    model = timm.create_model('hf-hub:org/convformer_tiny.fmnist', pretrained=True)

Everything here is one commit per push, after the weights, the config and the token are checked; local
machine paths a run recorded (``dataset``, ``output_dir``) are published as ``<local>/<name>``. ``load`` is the
checked loader of ``hybrid_zoo.factory``, the one every entry point uses. The token comes from ``token=``,
``HF_TOKEN`` or ``hf auth login`` and never appears in a message, log line or file. Needs the ``hub`` extra
(huggingface_hub, pyyaml, jinja2).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import yaml
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id
from safetensors import safe_open
from torch import nn

from hybrid_zoo import __version__
from hybrid_zoo.factory import (
    CONFIG_NAME,
    PICKLE_WEIGHTS_NAME,
    WEIGHTS_NAME,
    CorruptWeightsError,
    ModelLoadError,
    PickleRefusedError,
    UnknownModelError,
    build_from_folder,
    check_dtypes,
    check_safetensors,
    create_model,
    scan_weights,
)
from hybrid_zoo.hub.cards import redact_local_paths, render_card
from hybrid_zoo.run_files import METRICS, MODEL_DIR, RESULTS, TRAIN_ARGS

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

__all__ = [
    'CorruptWeightsError',
    'HubAuthError',
    'HubConflictError',
    'HubError',
    'ModelLoadError',
    'PickleRefusedError',
    'UnknownModelError',
    'build_from_folder',
    'check_folder',
    'check_safetensors',
    'dry_run',
    'load',
    'plan_upload',
    'push',
]

logger = logging.getLogger(__name__)

# Files a push takes from a training output folder (``<out>/model/`` and ``<out>/``); the rest stays local.
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, RESULTS, TRAIN_ARGS, '*.png')
RUN_FILES = (METRICS,)


def _yaml_twin(name: str) -> str:
    """The name of the YAML copy a push adds beside a JSON result file (``results.json`` -> ``results.yaml``)."""
    return name.removesuffix('.json') + '.yaml'


# Files a push owns in a repo: one the new push lacks is deleted in the same commit, so an old plot or an
# old pickle of other weights never sits next to the new model.
MANAGED_FILES = (
    RESULTS,
    _yaml_twin(RESULTS),
    TRAIN_ARGS,
    _yaml_twin(TRAIN_ARGS),
    METRICS,
    '*.png',
    PICKLE_WEIGHTS_NAME,
)
# text files whose local paths are replaced before upload (cards.redact_local_paths); the local copies are unchanged
REDACTED_FILES = ('*.json', '*.jsonl')


class HubError(RuntimeError):
    """A push that cannot go on; the message says what was expected and what to do."""


class HubAuthError(HubError):
    """No token, a rejected token, or a token without write access to the target namespace."""


class _PickleFolderError(HubError, PickleRefusedError):
    """A model folder to push whose only weights are a pickle."""


class HubConflictError(HubError):
    """The branch moved while a push was prepared: someone else committed to it in the meantime (HTTP 412)."""


# ---- checks that need no network ------------------------------------------------------------------
def check_folder(folder: str | os.PathLike) -> nn.Module:
    """Check a model folder before it is published; returns the (untrained) model its config builds.

    The weights must be a complete safetensors file whose tensor names and shapes are exactly those of
    the model ``config.json`` describes, with finite values and floating-point dtypes where the model has
    floating-point tensors, so what is pushed is what ``hf-hub:`` will load.

    Raises:
        CorruptWeightsError: Missing, truncated or corrupted weights, weights that do not fit the config, NaN/inf
            values or integer tensors where the model has floats (the tensor is named).
        UnknownModelError: The config names an architecture timm does not know.
        ConfigError: The config asks for what no model may (``hybrid_zoo.factory.check_config``).
        ModelLoadError: No config.
        PickleRefusedError: Only a pickle (also a ``HubError``).
        HubError: No weights.
    """
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        if (folder / PICKLE_WEIGHTS_NAME).exists():
            raise _PickleFolderError(
                f'{folder} has no {WEIGHTS_NAME}, only {PICKLE_WEIGHTS_NAME}: pushes never upload pickles; re-save '
                'it with timm.models.save_for_hf(..., safe_serialization=True)'
            )
        raise HubError(f'{folder} has no {WEIGHTS_NAME}')
    check_safetensors(weights)
    model = build_from_folder(folder)

    with safe_open(str(weights), framework='pt') as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if shapes != expected:
        missing, extra = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
        wrong = sorted(k for k in expected.keys() & shapes.keys() if expected[k] != shapes[k])
        detail = '; '.join(
            f'{what}: {keys[:3]}{" ..." if len(keys) > 3 else ""}'
            for what, keys in (('missing', missing), ('unexpected', extra), ('shape differs', wrong))
            if keys
        )
        raise CorruptWeightsError(f'{weights} does not match the model {folder / CONFIG_NAME} describes ({detail})')
    check_dtypes(scan_weights(weights), model, name=str(weights))
    return model


# ---- push -------------------------------------------------------------------------------------------
@contextmanager
def _model_folder(
    source: str | os.PathLike | nn.Module, model_config: dict | None, results: dict | None, train_args: dict | None
) -> Iterator[tuple[Path, Path | None]]:
    """(model folder, run folder or None) for a training output folder, its ``model/`` or an in-memory model."""
    if isinstance(source, nn.Module):
        with tempfile.TemporaryDirectory(prefix='hz-push-') as tmp:
            folder = Path(tmp)
            timm.models.save_for_hf(source, folder, model_config=model_config, safe_serialization=True)
            for name, data in ((RESULTS, results), (TRAIN_ARGS, train_args)):
                if data is not None:
                    (folder / name).write_text(json.dumps(data, indent=2))
            yield folder, None
        return
    if model_config is not None or results is not None or train_args is not None:
        raise ValueError('model_config, results and train_args are for in-memory models; a folder brings its own files')
    path = Path(source)
    if (path / MODEL_DIR / CONFIG_NAME).is_file():
        yield path / MODEL_DIR, path
    elif (path / CONFIG_NAME).is_file():
        yield path, path.parent if path.name == MODEL_DIR else None
    else:
        raise HubError(
            f'{path} is neither a training output folder (with {MODEL_DIR}/{CONFIG_NAME}) nor a model folder'
        )


def collect_files(folder: Path, run_dir: Path | None = None) -> dict[str, Path]:
    """``{path in repo: local file}`` of what a push takes from ``folder`` (and the run's log)."""
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and _matches(p.name, MODEL_FILES)}
    if run_dir is not None:
        files.update({p.name: p for p in sorted(run_dir.iterdir()) if p.is_file() and _matches(p.name, RUN_FILES)})
    return files


def plan_upload(
    folder: Path,
    run_dir: Path | None,
    repo_id: str,
    *,
    license: str = 'apache-2.0',
    base_model: str | None = None,
) -> dict[str, Path | bytes]:
    """Check a model folder and list what a push uploads: ``{path in repo: local file or generated bytes}``.

    Needs no network: the weights are checked against the config, the card is rendered from the result files.
    Local paths in what is published (the card, the JSON and YAML files, the metrics log) are replaced by
    ``<local>/<name>``; the local files are not changed.
    """

    model = check_folder(folder)
    files: dict[str, Path | bytes] = {}
    for name, path in collect_files(folder, run_dir).items():
        if name == CONFIG_NAME:
            files[name] = _public_config(path)
        else:
            files[name] = _public_text(path) if _matches(name, REDACTED_FILES) else path
    card = render_card(folder, repo_id=repo_id, license=license, base_model=base_model, model=model)
    files.update(_generated_files(folder, str(card)))
    return files


def _public_config(path: Path) -> Path | bytes:
    """``config.json`` as it is published: local paths replaced, and ``num_classes`` only at the top level.

    timm's ``save_for_hf`` repeats ``num_classes`` inside ``model_args``; transformers' timm wrapper
    (``AutoModelForImageClassification``, ``pipeline('image-classification')``) passes ``num_classes`` itself next to
    ``**model_args`` and stops with "multiple values for keyword argument 'num_classes'". timm reads the top-level
    value into the pretrained cfg, which sets the head, so nothing is lost. (``in_chans`` and ``global_pool`` stay:
    the wrapper passes neither, and a grayscale model needs its ``in_chans``.)
    """
    config = json.loads(path.read_text(encoding='utf-8'))
    args = config.get('model_args')
    if isinstance(args, dict) and 'num_classes' in args and args['num_classes'] == config.get('num_classes'):
        config['model_args'] = {k: v for k, v in args.items() if k != 'num_classes'}
        return (json.dumps(redact_local_paths(config), indent=2) + '\n').encode()
    return _public_text(path)


def _public_text(path: Path) -> Path | bytes:
    """A text file as it may be published: local paths (a run's ``dataset``, ``output_dir``...) replaced.

    The file itself is returned when nothing changes, so an unchanged push still uploads nothing.
    """

    text = path.read_text(encoding='utf-8')
    public = redact_local_paths(text)
    return path if public == text else public.encode()


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _generated_files(folder: Path, card: str) -> dict[str, bytes]:
    """The card and YAML twins of the JSON result files (for readers and tools that prefer YAML)."""

    out = {'README.md': card.encode()}
    for name in (RESULTS, TRAIN_ARGS):
        src = folder / name
        if src.is_file():
            data = redact_local_paths(json.loads(src.read_text()))
            out[_yaml_twin(name)] = yaml.safe_dump(data, sort_keys=False).encode()
    return out


def _check_auth(api: HfApi, repo_id: str) -> None:
    """Raise HubAuthError unless the token may write to ``repo_id``'s namespace."""

    try:
        me = api.whoami()
    except LocalTokenNotFoundError:
        raise HubAuthError(
            f'No Hugging Face token found for {api.endpoint}: set HF_TOKEN or run `hf auth login` (nothing was uploaded)'
        ) from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise HubAuthError(
                f'{api.endpoint} rejected the token (401): it is invalid or expired. Set HF_TOKEN to a valid '
                'token or run `hf auth login` (nothing was uploaded)'
            ) from None
        raise
    user = me['name']
    namespaces = {user, *(org['name'] for org in me.get('orgs') or [])}
    namespace = repo_id.split('/')[0]
    role = ((me.get('auth') or {}).get('accessToken') or {}).get('role')
    if role == 'read':
        raise HubAuthError(f'The token of {user!r} is read-only: a push needs a write token (nothing was uploaded)')
    if namespace not in namespaces:
        raise HubAuthError(
            f'The token belongs to {user!r}, who cannot write to namespace {namespace!r} '
            f'(writable: {", ".join(sorted(namespaces))}); nothing was uploaded'
        )


def check_write_access(api: HfApi, repo_id: str) -> None:
    """Raise :class:`HubAuthError` (no token, a rejected or read-only token, a namespace it cannot write) or
    :class:`HubError` (the Hub unreachable) before anything is uploaded to ``repo_id``."""
    try:
        _check_auth(api, repo_id)
    except HubError:
        raise
    except Exception as e:
        raise _network_error(api, repo_id, e, 'checking the token') from e


def push(
    source: str | os.PathLike | nn.Module,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    model_config: dict | None = None,
    results: dict | None = None,
    train_args: dict | None = None,
    license: str = 'apache-2.0',
    base_model: str | None = None,
) -> CommitInfo:
    """Publish a model to a Hub repo in one commit: weights, config, card, results, args and plots.

    Args:
        source: A training output folder (``<out>`` or ``<out>/model``) or an ``nn.Module`` (then pass
            ``model_config`` with ``label_names`` etc., and ``results``/``train_args`` dicts if any).
        repo_id: ``namespace/name``; by timm's convention ``org/<architecture>.<tag>``.
        revision: Branch to commit to (created from ``main`` if missing); default ``main``.
        private: Create the repo private (an existing repo keeps its visibility).
        create_pr: Open a pull request with the commit instead of committing to the branch.
        commit_message: Commit title; default names the architecture and top-1 accuracy.
        token: Access token; default ``HF_TOKEN`` or the ``hf auth login`` store. Never printed or saved.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        model_config: For an ``nn.Module``: extra ``config.json`` fields (``label_names``, ``pretrained_cfg``...).
        results: For an ``nn.Module``: eval metrics to publish (``results.json`` schema).
        train_args: For an ``nn.Module``: training configuration to publish.
        license: Hub license id for the card.
        base_model: Hub id of the model this one was fine-tuned from (recorded in the card).

    Files an earlier push left in the repo (plots, results, a pickle of other weights) that this push does
    not have are deleted in the same commit, so the repo never mixes two runs.

    Returns:
        The commit's ``CommitInfo``. If no file changed, nothing is committed and it names the current head.

    Raises:
        huggingface_hub.errors.HFValidationError: Invalid ``repo_id`` (raised before any network call).
        CorruptWeightsError: Truncated, corrupted or mismatched weights, NaN/inf values or integer tensors where
            the model has floats (before any network call).
        HubAuthError: Missing, invalid or read-only token, or no write access to the namespace (before upload).
        HubConflictError: Someone else committed to the branch while this push was prepared; nothing was committed.
        HubError: The Hub could not be reached or the upload broke off; nothing was committed and the
            local files are untouched, so running the same push again completes it.
    """

    _validate_repo_id(repo_id)
    with _model_folder(source, model_config, results, train_args) as (folder, run_dir):
        upload = plan_upload(folder, run_dir, repo_id, license=license, base_model=base_model)
        title = commit_message or _default_message(folder)
        api = HfApi(endpoint=endpoint, token=token, library_name='hybrid_zoo', library_version=__version__)
        check_write_access(api, repo_id)
        logger.info('pushing %d files to %s@%s: %s', len(upload), repo_id, revision or 'main', ', '.join(upload))
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision not in (None, 'main'):
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            head = api.repo_info(repo_id, revision=revision)
            stale = [s.rfilename for s in head.siblings or [] if _matches(s.rfilename, MANAGED_FILES)]
            ops = [CommitOperationAdd(p, str(f) if isinstance(f, Path) else f) for p, f in upload.items()]
            ops += [CommitOperationDelete(p) for p in stale if p not in upload]
            # parent_commit: a concurrent push makes this one fail instead of silently interleaving
            info = api.create_commit(
                repo_id, ops, commit_message=title, revision=revision, create_pr=create_pr, parent_commit=head.sha
            )
        except Exception as e:
            raise _network_error(api, repo_id, e, 'uploading', revision=revision) from e
    if info.oid == head.sha:
        logger.info('%s@%s already has these files: no new commit (%s)', repo_id, revision or 'main', info.oid)
    else:
        logger.info('committed %s%s', info.commit_url, f' (pull request {info.pr_url})' if info.pr_url else '')
    return info


def _validate_repo_id(repo_id: str) -> None:
    """huggingface_hub's own check, plus an explicit namespace (timm's convention: ``org/<arch>.<tag>``)."""

    validate_repo_id(repo_id)
    if '/' not in repo_id:
        raise HFValidationError(f"Repo id {repo_id!r} needs a namespace: 'user/name' or 'org/name'")


def _default_message(folder: Path) -> str:
    arch = json.loads((folder / CONFIG_NAME).read_text()).get('architecture', 'model')
    results = folder / RESULTS
    top1 = json.loads(results.read_text()).get('top1') if results.is_file() else None
    return f'Upload {arch}' + (f' (top-1 {top1:.2f})' if isinstance(top1, int | float) else '')


def _network_error(api: HfApi, repo_id: str, error: Exception, doing: str, *, revision: str | None = None) -> HubError:
    """A failed network step as an error that says what broke and what to do (rerun, log in, or look first)."""
    chain = [error]
    while chain[-1].__cause__ is not None:  # the client wraps transport errors ("Error while uploading ...")
        chain.append(chain[-1].__cause__)
    response = next((r for e in chain if (r := getattr(e, 'response', None)) is not None), None)
    detail = ' <- '.join(
        dict.fromkeys(f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}' for e in chain)
    )
    if response is not None and response.status_code in (401, 403):
        return HubAuthError(f'{api.endpoint} refused the push to {repo_id} while {doing}: {detail}')
    if response is not None and response.status_code == 412:  # the commit's parent_commit is no longer the head
        branch = f'{repo_id}@{revision or "main"}'
        return HubConflictError(
            f'Push to {repo_id} on {api.endpoint} conflicts with another commit: {branch} moved while this push was '
            f'prepared, because someone else committed to it in the meantime ({detail}). Nothing from this push was '
            'committed and the local folder is untouched. Look at the new commit first (HfApi().list_repo_commits('
            f'{repo_id!r})); run the push again if this model should still go on top of it.'
        )
    # a Hub without the Xet protocol (a mirror, the local test server) fails deep inside hf_xet
    hint = ' The server does not speak Xet: set HF_HUB_DISABLE_XET=1 for it.' if 'xet-' in detail else ''
    return HubError(
        f'Push to {repo_id} on {api.endpoint} failed while {doing} ({detail}).{hint} A push is one commit: nothing '
        'was committed unless the commit itself went through, and the local folder is untouched. Run the same push '
        'again once the Hub is reachable; files already uploaded are not sent twice.'
    )


# ---- load -------------------------------------------------------------------------------------------
def load(name: str | os.PathLike, *, pretrained: bool = True, allow_pickle: bool = False, **kwargs: Any) -> nn.Module:
    """A model from the Hub (or a folder, or a registry tag) through the checked loader of ``hybrid_zoo.factory``.

    Only the verified ``model.safetensors`` is loaded (header and sha256 checked, NaN/inf refused); a repo's
    ``config.json`` cannot point timm at another file (``hf_hub_filename``, ``file`` and ``url`` are ignored).

    Args:
        name: ``hf-hub:org/name[@revision]``, a bare ``org/name[@revision]``, a folder (or ``local-dir:/path``) or a
            registry name such as ``convformer_tiny.<tag>`` (its ``hf_hub_id`` is checked the same way).
        pretrained: Load the published weights.
        allow_pickle: Accept a repo that has only ``pytorch_model.bin``, loaded with
            ``torch.load(weights_only=True)``; by default such a repo is refused without unpickling.
        **kwargs: Passed to ``timm.create_model``: overrides like ``num_classes``, ``in_chans``,
            ``features_only=True``, ``pretrained_cfg_overlay``.

    Raises:
        UnknownModelError: Unknown architecture (with the ``import hybrid_zoo`` hint).
        CorruptWeightsError: The weights file is truncated, corrupted or holds unusable values (named in the message).
        PickleRefusedError: Only a pickle is available and ``allow_pickle`` is False.
        ModelLoadError: No config or no weights in the repo (the base class of the three above).
    """
    name = str(name)
    if os.path.isdir(name):
        name = f'local-dir:{os.path.abspath(name)}'
    elif '/' in name and ':' not in name:
        name = f'hf-hub:{name}'
    return create_model(name, pretrained=pretrained, allow_pickle=allow_pickle, **kwargs)


def dry_run(folder: str | os.PathLike, repo_id: str, *, license: str = 'apache-2.0', base_model: str | None = None):
    """What :func:`push` would upload, without contacting the Hub: ``{path in the repo: (bytes, source)}``, where the
    source is a local file or ``'(generated)'``.

    Raises:
        HubError, ModelLoadError, HFValidationError: as :func:`push` would, before any upload.
    """
    _validate_repo_id(repo_id)
    with _model_folder(folder, None, None, None) as (model_dir, run_dir):
        upload = plan_upload(model_dir, run_dir, repo_id, license=license, base_model=base_model)
    return {
        path: (f.stat().st_size, str(f)) if isinstance(f, Path) else (len(f), '(generated)')
        for path, f in upload.items()
    }
