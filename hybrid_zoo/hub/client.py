"""Publish trained models to the Hugging Face Hub and load them back, in timm's own repo format.

A repo holds ``model.safetensors`` (never a pickle), timm's ``config.json`` (architecture, classes,
label names, preprocessing, constructor args), a ``README.md`` model card rendered from the result
files, the training args and eval results as JSON and YAML, the training log and plots. It loads with
plain timm once the architectures are registered::

    import hybrid_zoo  # registers the convformer_* architectures
    import timm
    model = timm.create_model('hf-hub:org/convformer_tiny.fmnist', pretrained=True)

Everything here is one commit per push, after the weights, the config and the token are checked.
The token comes from ``token=``, ``HF_TOKEN`` or ``hf auth login`` and never appears in a message,
log line or file. Needs the ``hub`` extra (huggingface_hub, pyyaml, jinja2).
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
from torch import nn

from hybrid_zoo_cli.push import build_parser

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

logger = logging.getLogger(__name__)

WEIGHTS_NAME = 'model.safetensors'
PICKLE_WEIGHTS_NAME = 'pytorch_model.bin'
CONFIG_NAME = 'config.json'
# Files a push takes from a training output folder (``<out>/model/`` and ``<out>/``); the rest stays local.
MODEL_FILES = (CONFIG_NAME, WEIGHTS_NAME, 'results.json', 'train_args.json', '*.png')
RUN_FILES = ('metrics.jsonl',)
# Files a push owns in a repo: one the new push lacks is deleted in the same commit, so an old plot or an
# old pickle of other weights never sits next to the new model.
MANAGED_FILES = (
    'results.json',
    'results.yaml',
    'train_args.json',
    'train_args.yaml',
    'metrics.jsonl',
    '*.png',
    PICKLE_WEIGHTS_NAME,
)
IMPORT_HINT = 'import hybrid_zoo'


class HubError(RuntimeError):
    """A push or load that cannot go on; the message says what was expected and what to do."""


class HubAuthError(HubError):
    """No token, a rejected token, or a token without write access to the target namespace."""


class CorruptWeightsError(HubError, ValueError):
    """A weights file that is truncated, corrupted or not safetensors at all."""


class PickleRefusedError(HubError):
    """Only a pickle (``pytorch_model.bin``) is available and unpickling was not allowed."""


# ---- checks that need no network ------------------------------------------------------------------
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
    if sha256 is not None and _sha256(path) != sha256:
        raise CorruptWeightsError(
            f'{label} ({size} bytes) does not match its recorded sha256 {sha256}: the file is corrupted; '
            'download it again (force_download=True).'
        )
    return n


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def build_from_folder(folder: str | os.PathLike, **kwargs: Any) -> nn.Module:
    """An untrained model built from ``<folder>/config.json`` exactly as timm will build it after download.

    Raises:
        HubError: ``config.json`` is missing or names an architecture timm does not know.
    """
    folder = Path(folder)
    if not (folder / CONFIG_NAME).is_file():
        raise HubError(f'{folder} has no {CONFIG_NAME}: expected a folder written by timm.models.save_for_hf')
    return _create(f'local-dir:{folder}', pretrained=False, **kwargs)


def _create(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the plugin hint on an unknown architecture."""
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if 'Unknown model' not in str(e):
            raise
        raise _unknown_architecture(f'{e}: {name!r}') from None


def _unknown_architecture(what: str) -> HubError:
    return HubError(
        f'{what} names an architecture that is not registered in timm. If it is a hybrid_zoo model, run '
        f'`{IMPORT_HINT}` before timm.create_model(...) (timm has no plugin discovery); otherwise install the '
        'package that defines it.'
    )


def check_folder(folder: str | os.PathLike) -> nn.Module:
    """Check a model folder before it is published; returns the (untrained) model its config builds.

    The weights must be a complete safetensors file whose tensor names and shapes are exactly those of
    the model ``config.json`` describes, so what is pushed is what ``hf-hub:`` will load.

    Raises:
        CorruptWeightsError: Missing, truncated or corrupted weights, or weights that do not fit the config.
        HubError: No config, an unknown architecture, or only a pickle.
    """
    folder = Path(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        hint = f' (found {PICKLE_WEIGHTS_NAME}: pushes never upload pickles; re-save with safe_serialization=True)'
        raise HubError(f'{folder} has no {WEIGHTS_NAME}' + (hint if (folder / PICKLE_WEIGHTS_NAME).exists() else ''))
    check_safetensors(weights)
    model = build_from_folder(folder)
    from safetensors import safe_open

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
            for name, data in (('results.json', results), ('train_args.json', train_args)):
                if data is not None:
                    (folder / name).write_text(json.dumps(data, indent=2))
            yield folder, None
        return
    if model_config is not None or results is not None or train_args is not None:
        raise ValueError('model_config, results and train_args are for in-memory models; a folder brings its own files')
    path = Path(source)
    if (path / 'model' / CONFIG_NAME).is_file():
        yield path / 'model', path
    elif (path / CONFIG_NAME).is_file():
        yield path, path.parent if path.name == 'model' else None
    else:
        raise HubError(f'{path} is neither a training output folder (with model/{CONFIG_NAME}) nor a model folder')


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
    """
    from hybrid_zoo.hub.cards import render_card

    model = check_folder(folder)
    files: dict[str, Path | bytes] = dict(collect_files(folder, run_dir))
    card = render_card(folder, repo_id=repo_id, license=license, base_model=base_model, model=model)
    files.update(_generated_files(folder, str(card)))
    return files


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


def _generated_files(folder: Path, card: str) -> dict[str, bytes]:
    """The card and YAML twins of the JSON result files (for readers and tools that prefer YAML)."""
    import yaml

    out = {'README.md': card.encode()}
    for name in ('results', 'train_args'):
        src = folder / f'{name}.json'
        if src.is_file():
            out[f'{name}.yaml'] = yaml.safe_dump(json.loads(src.read_text()), sort_keys=False).encode()
    return out


def _check_auth(api: HfApi, repo_id: str) -> None:
    """Raise HubAuthError unless the token may write to ``repo_id``'s namespace."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

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
        CorruptWeightsError: Truncated, corrupted or mismatched weights (before any network call).
        HubAuthError: Missing, invalid or read-only token, or no write access to the namespace (before upload).
        HubError: The Hub could not be reached or the upload broke off; nothing was committed and the
            local files are untouched, so running the same push again completes it.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from hybrid_zoo import __version__

    _validate_repo_id(repo_id)
    with _model_folder(source, model_config, results, train_args) as (folder, run_dir):
        upload = plan_upload(folder, run_dir, repo_id, license=license, base_model=base_model)
        title = commit_message or _default_message(folder)
        api = HfApi(endpoint=endpoint, token=token, library_name='hybrid_zoo', library_version=__version__)
        try:
            _check_auth(api, repo_id)
        except HubError:
            raise
        except Exception as e:
            raise _network_error(api, repo_id, e, 'checking the token') from e
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
            raise _network_error(api, repo_id, e, 'uploading') from e
    if info.oid == head.sha:
        logger.info('%s@%s already has these files: no new commit (%s)', repo_id, revision or 'main', info.oid)
    else:
        logger.info('committed %s%s', info.commit_url, f' (pull request {info.pr_url})' if info.pr_url else '')
    return info


def _validate_repo_id(repo_id: str) -> None:
    """huggingface_hub's own check, plus an explicit namespace (timm's convention: ``org/<arch>.<tag>``)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(repo_id)
    if '/' not in repo_id:
        raise HFValidationError(f"Repo id {repo_id!r} needs a namespace: 'user/name' or 'org/name'")


def _default_message(folder: Path) -> str:
    arch = json.loads((folder / CONFIG_NAME).read_text()).get('architecture', 'model')
    results = folder / 'results.json'
    top1 = json.loads(results.read_text()).get('top1') if results.is_file() else None
    return f'Upload {arch}' + (f' (top-1 {top1:.2f})' if isinstance(top1, int | float) else '')


def _network_error(api: HfApi, repo_id: str, error: Exception, doing: str) -> HubError:
    """A failed network step as an error that says what broke and that running the push again is safe."""
    chain = [error]
    while chain[-1].__cause__ is not None:  # the client wraps transport errors ("Error while uploading ...")
        chain.append(chain[-1].__cause__)
    response = next((r for e in chain if (r := getattr(e, 'response', None)) is not None), None)
    detail = ' <- '.join(
        dict.fromkeys(f'{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ""}' for e in chain)
    )
    if response is not None and response.status_code in (401, 403):
        return HubAuthError(f'{api.endpoint} refused the push to {repo_id} while {doing}: {detail}')
    # a Hub without the Xet protocol (a mirror, the local test server) fails deep inside hf_xet
    hint = ' The server does not speak Xet: set HF_HUB_DISABLE_XET=1 for it.' if 'xet-' in detail else ''
    return HubError(
        f'Push to {repo_id} on {api.endpoint} failed while {doing} ({detail}).{hint} A push is one commit: nothing '
        'was committed unless the commit itself went through, and the local folder is untouched. Run the same push '
        'again once the Hub is reachable; files already uploaded are not sent twice.'
    )


# ---- load -------------------------------------------------------------------------------------------
def _hub_source(name: str, kwargs: dict) -> tuple[str, str | None] | None:
    """(repo_id, revision) a timm model name loads weights from, or None for non-Hub sources."""
    from timm.models._hub import hf_split

    source, model_id = timm.models.parse_model_name(name)
    if source == 'hf-hub':
        return hf_split(model_id)
    if source is not None:
        return None
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    cfg = kwargs.get('pretrained_cfg')
    if not isinstance(cfg, dict):
        cfg = timm.models.get_pretrained_cfg(model_id)
        cfg = cfg.to_dict() if cfg is not None else {}
    hf_hub_id = overlay.get('hf_hub_id', cfg.get('hf_hub_id'))
    return hf_split(hf_hub_id) if hf_hub_id else None


def _check_hub_weights(repo_id: str, revision: str | None, allow_pickle: bool) -> None:
    """Download and check the weights timm is about to load; refuse a pickle unless allowed."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    label = f'{repo_id}@{revision or "main"}'
    try:
        path = hf_hub_download(repo_id, WEIGHTS_NAME, revision=revision, library_name='timm')
    except EntryNotFoundError:
        if not HfApi().file_exists(repo_id, PICKLE_WEIGHTS_NAME, revision=revision):
            raise HubError(f'{label} has neither {WEIGHTS_NAME} nor {PICKLE_WEIGHTS_NAME}') from None
        if not allow_pickle:
            raise PickleRefusedError(
                f'{label} has only {PICKLE_WEIGHTS_NAME}, a pickle that can run code when loaded. It was not '
                'loaded. Pass allow_pickle=True to load it with torch.load(weights_only=True), which refuses '
                'anything but tensors.'
            ) from None
        logger.warning('%s: loading %s with torch.load(weights_only=True) as allowed', label, PICKLE_WEIGHTS_NAME)
        return
    # the cache names an LFS blob by its sha256, which lets a check catch corruption after download too
    blob = Path(path).resolve().name
    check_safetensors(path, name=f'{label}:{WEIGHTS_NAME}', sha256=blob if len(blob) == 64 else None)


def load(name: str, *, pretrained: bool = True, allow_pickle: bool = False, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with the checks a downloaded checkpoint deserves.

    Args:
        name: ``hf-hub:org/name[@revision]``, a bare ``org/name[@revision]``, ``local-dir:/path`` or a
            registry name such as ``convformer_tiny.<tag>`` (its ``hf_hub_id`` is checked the same way).
        pretrained: Load the published weights.
        allow_pickle: Accept a repo that has only ``pytorch_model.bin``, loaded with
            ``torch.load(weights_only=True)``; by default such a repo is refused without unpickling.
        **kwargs: Passed to ``timm.create_model``: overrides like ``num_classes``, ``in_chans``,
            ``features_only=True``, ``pretrained_cfg_overlay``.

    Raises:
        HubError: Unknown architecture (with the ``import hybrid_zoo`` hint) or no weights in the repo.
        CorruptWeightsError: The weights file is truncated or corrupted (named in the message).
        PickleRefusedError: Only a pickle is available and ``allow_pickle`` is False.
    """
    if '/' in name and ':' not in name:
        name = f'hf-hub:{name}'
    if pretrained:
        source, model_id = timm.models.parse_model_name(name)
        hub = _hub_source(name, kwargs)
        if hub is not None:
            if source == 'hf-hub':
                _check_architecture(*hub)
            _check_hub_weights(*hub, allow_pickle=allow_pickle)
        elif source == 'local-dir':
            folder = Path(model_id)
            if (folder / WEIGHTS_NAME).is_file():
                check_safetensors(folder / WEIGHTS_NAME)
            elif not allow_pickle:  # timm would fall back on a pickled checkpoint in the folder
                raise PickleRefusedError(f'{folder} has no {WEIGHTS_NAME}; pass allow_pickle=True to load a pickle')
    return _create(name, pretrained=pretrained, **kwargs)


def _check_architecture(repo_id: str, revision: str | None) -> None:
    """Fail early, with the plugin hint, when the repo's config names an architecture timm lacks."""
    from huggingface_hub import hf_hub_download

    config = json.loads(Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, library_name='timm')).read_text())
    arch = config.get('architecture')
    if arch is None or not timm.is_model(arch):
        raise _unknown_architecture(f'{repo_id}@{revision or "main"}: {CONFIG_NAME} ({arch!r})')


# ---- command line -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('httpx2').setLevel(logging.WARNING)  # one line per HTTP request is noise here
    from huggingface_hub.errors import HFValidationError

    try:
        if args.dry_run:
            return _dry_run(args)
        info = push(
            args.folder,
            args.repo_id,
            revision=args.revision,
            private=args.private,
            create_pr=args.create_pr,
            commit_message=args.commit_message,
            endpoint=args.endpoint,
            license=args.license,
            base_model=args.base_model,
        )
    except (HubError, HFValidationError) as e:
        print(f'hybrid-zoo push: {e}', file=sys.stderr)
        return 1
    print(info.pr_url or info.commit_url)
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    _validate_repo_id(args.repo_id)
    with _model_folder(args.folder, None, None, None) as (folder, run_dir):
        upload = plan_upload(folder, run_dir, args.repo_id, license=args.license, base_model=args.base_model)
    for path, f in upload.items():
        size, where = (f.stat().st_size, str(f)) if isinstance(f, Path) else (len(f), '(generated)')
        print(f'{path:<20} {size:>12,d} bytes  {where}')
    return 0
