"""What goes wrong when publishing and loading, and what the user is told: each failure with a clear error."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import socket
import threading

import pytest
import timm
import torch
from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from test_hub import assert_same_weights

from hybrid_zoo.hub import client as hub
from hybrid_zoo.hub.server import HubServer
from hybrid_zoo.hub.server.server import HubHandler

pytestmark = [
    pytest.mark.hub,
    # huggingface_hub's LFS upload hands httpx a file object as `data=`; its deprecation is not ours to fix
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

ARCH = 'test_resnet'  # these tests are about the plumbing: timm's smallest model keeps them quick


def make_folder(path, *, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=2).eval()
    timm.models.save_for_hf(
        model,
        path,
        model_config={'label_names': ['a', 'b']},
        safe_serialization=True,
        data_config={'input_size': (3, 32, 32)},
    )
    (path / 'results.json').write_text(json.dumps({'top1': 50.0, 'dataset': 'toy', 'split': 'val'}))
    return model


def snapshot(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob('*'))
        if p.is_file()
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def writes(server: HubServer, since: int) -> list[tuple[str, str]]:
    """Requests that change something (everything but reads and the token check) after index ``since``."""
    return [
        (m, p) for m, p in list(server.requests)[since:] if m in ('POST', 'PUT', 'DELETE') and 'paths-info' not in p
    ]


@pytest.fixture
def folder(tmp_path):
    make_folder(tmp_path / 'model')
    return tmp_path / 'model'


@pytest.fixture
def fast_retries(monkeypatch):
    """The client retries a broken upload 5 times with backoff (1+2+4+8+8 s); keep the retries, drop the waits."""
    import huggingface_hub._commit_api
    import huggingface_hub.lfs
    from huggingface_hub.utils import http_backoff

    quick = functools.partial(http_backoff, base_wait_time=0.01, max_wait_time=0.01)
    monkeypatch.setattr(huggingface_hub.lfs, 'http_backoff', quick)
    monkeypatch.setattr(huggingface_hub._commit_api, 'http_backoff', quick)


def test_server_down_then_rerun_completes(folder, tmp_path, hub_tokens):
    port, before = free_port(), snapshot(folder)
    endpoint = f'http://127.0.0.1:{port}'
    with pytest.raises(hub.HubError, match=f'{endpoint}.*checking the token.*Run the same push again'):
        hub.push(folder, 'alice/down', token=hub_tokens['alice'], endpoint=endpoint)
    assert snapshot(folder) == before
    with HubServer(tmp_path / 'data', port=port, tokens={hub_tokens['alice']: 'alice'}):
        info = hub.push(folder, 'alice/down', token=hub_tokens['alice'], endpoint=endpoint)
        assert info.oid == HfApi(endpoint=endpoint).list_repo_commits('alice/down')[0].commit_id


def test_server_stops_mid_upload_then_rerun_completes(folder, tmp_path, hub_tokens, monkeypatch, fast_retries):
    token, port, before = hub_tokens['alice'], free_port(), snapshot(folder)
    endpoint = f'http://127.0.0.1:{port}'
    server = HubServer(tmp_path / 'data', port=port, tokens={token: 'alice'}).start()

    def die_during_upload(handler, ticket):  # the weights are half-sent when the server goes away
        handler._body_read = True
        next(handler._body_chunks())
        threading.Thread(target=server.stop).start()
        raise ConnectionError('server stopped mid-upload')

    monkeypatch.setattr(HubHandler, '_lfs_put', die_during_upload)
    with pytest.raises(hub.HubError, match=r'while uploading.*model\.safetensors.*Run the same push again'):
        hub.push(folder, 'alice/mid', token=token, endpoint=endpoint)
    assert snapshot(folder) == before
    monkeypatch.undo()

    with HubServer(tmp_path / 'data', port=port, tokens={token: 'alice'}):  # back up on the same store
        api = HfApi(endpoint=endpoint, token=token)
        assert [c.title for c in api.list_repo_commits('alice/mid')] == ['initial commit']  # nothing half-committed
        hub.push(folder, 'alice/mid', token=token, endpoint=endpoint)
        remote = api.get_paths_info('alice/mid', ['model.safetensors'])[0]
        assert remote.lfs.sha256 == hashlib.sha256((folder / 'model.safetensors').read_bytes()).hexdigest()
    assert snapshot(folder) == before


def test_a_concurrent_commit_is_reported_as_a_conflict(folder, hub_server, hf_token, hub_tokens, monkeypatch):
    """L18: the loser of two pushes to one branch (the Hub answers 412) is told what happened, not to retry blindly."""
    hub.push(folder, 'alice/race')
    make_folder(folder, seed=1)  # new weights: this push has something to commit
    commit = HfApi.create_commit

    def someone_else_commits_first(api, repo_id, operations, **kwargs):
        monkeypatch.setattr(HfApi, 'create_commit', commit)  # once: the other pusher's own commit goes through
        HfApi(token=hub_tokens['alice']).upload_file(path_or_fileobj=b'x', path_in_repo='notes.txt', repo_id=repo_id)
        return commit(api, repo_id, operations, **kwargs)  # with the parent_commit read before the other commit

    monkeypatch.setattr(HfApi, 'create_commit', someone_else_commits_first)
    with pytest.raises(hub.HubConflictError, match=r'alice/race@main moved.*someone else committed.*412') as caught:
        hub.push(folder, 'alice/race')
    assert 'once the Hub is reachable' not in str(caught.value)
    assert [c.title for c in HfApi().list_repo_commits('alice/race')][0] == 'Upload notes.txt with huggingface_hub'
    hub.push(folder, 'alice/race')  # run again on top of the new commit: it goes through


def test_missing_or_bad_token_fails_before_upload(folder, hub_server, hub_tokens, monkeypatch):
    monkeypatch.delenv('HF_TOKEN', raising=False)
    start = len(hub_server.requests)
    with pytest.raises(hub.HubAuthError, match='No Hugging Face token.*HF_TOKEN.*hf auth login'):
        hub.push(folder, 'alice/auth')
    monkeypatch.setenv('HF_TOKEN', 'hf_wrong')
    with pytest.raises(hub.HubAuthError, match='rejected the token'):
        hub.push(folder, 'alice/auth')
    with pytest.raises(hub.HubAuthError, match="belongs to 'bob'.*cannot write to namespace 'alice'"):
        hub.push(folder, 'alice/auth', token=hub_tokens['bob'])
    with pytest.raises(hub.HubAuthError, match='read-only'):
        hub.push(folder, 'carol/auth', token=hub_tokens['carol'])
    assert writes(hub_server, start) == []


def test_invalid_repo_id_fails_before_any_network_call(folder, hub_server, hf_token):
    start = len(hub_server.requests)
    for bad in ('not a repo', 'a/b/c', '-alice/x', 'alice/x--y', 'alice/' + 'x' * 97, 'no-namespace'):
        with pytest.raises(HFValidationError):
            hub.push(folder, bad)
    assert list(hub_server.requests)[start:] == []


def test_corrupted_weights_are_refused_by_push(folder, hub_server, hf_token):
    start = len(hub_server.requests)
    weights = folder / 'model.safetensors'
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(hub.CorruptWeightsError, match=r'model\.safetensors is not a valid safetensors file'):
        hub.push(folder, 'alice/corrupt')
    weights.write_bytes(b'\xff' * 8 + data[8:])  # a garbage header length
    with pytest.raises(hub.CorruptWeightsError, match=r'model\.safetensors'):
        hub.push(folder, 'alice/corrupt')
    assert list(hub_server.requests)[start:] == []


def test_weights_that_do_not_fit_the_config_are_refused(folder, hf_token):
    config = json.loads((folder / 'config.json').read_text())
    config['num_classes'] = config['model_args']['num_classes'] = 5
    (folder / 'config.json').write_text(json.dumps(config))
    with pytest.raises(hub.CorruptWeightsError, match=r'does not match the model.*shape differs'):
        hub.push(folder, 'alice/mismatch')


def test_corrupted_weights_are_named_on_load(folder, hub_server, hf_token):
    api = HfApi()
    repo = 'alice/corrupt-remote'
    api.create_repo(repo)
    data = (folder / 'model.safetensors').read_bytes()
    api.upload_file(path_or_fileobj=folder / 'config.json', path_in_repo='config.json', repo_id=repo)
    api.upload_file(path_or_fileobj=data[:-100], path_in_repo='model.safetensors', repo_id=repo)  # bypasses push
    with pytest.raises(hub.CorruptWeightsError, match=rf'{repo}@main:model\.safetensors is not a valid safetensors'):
        hub.load(f'hf-hub:{repo}')
    with pytest.raises(hub.CorruptWeightsError, match=r'model\.safetensors'):  # the registry path is checked too
        hub.load(ARCH, num_classes=2, pretrained_cfg_overlay={'hf_hub_id': repo, 'num_classes': 2})


def test_a_corrupted_cache_is_caught(folder, hub_server, hf_token):
    model = make_folder(folder, seed=3)
    hub.push(folder, 'alice/cache-check')
    assert_same_weights(model, hub.load('alice/cache-check'))
    cached = api_cached_weights('alice/cache-check')
    data = bytearray(cached.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor: the header still parses
    cached.write_bytes(bytes(data))
    with pytest.raises(hub.CorruptWeightsError, match=r'does not match its recorded sha256'):
        hub.load('alice/cache-check')


def api_cached_weights(repo: str):
    from pathlib import Path

    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo, 'model.safetensors', local_files_only=True)).resolve()


RAN: list[str] = []


def _run_payload() -> None:
    RAN.append('unpickling ran code')


class _Payload:
    """A pickle that runs code when unpickled: what a hostile pytorch_model.bin can hold."""

    def __reduce__(self):
        return (_run_payload, ())


def test_pickles_are_never_loaded_unless_asked(folder, hub_server, hf_token, tmp_path):
    api = HfApi()
    model = timm.create_model(ARCH, num_classes=2).eval()
    for repo, weights in (('alice/benign-bin', model.state_dict()), ('alice/hostile-bin', {'x': _Payload()})):
        api.create_repo(repo)
        torch.save(weights, tmp_path / 'pytorch_model.bin')
        api.upload_file(path_or_fileobj=folder / 'config.json', path_in_repo='config.json', repo_id=repo)
        api.upload_file(path_or_fileobj=tmp_path / 'pytorch_model.bin', path_in_repo='pytorch_model.bin', repo_id=repo)

    for repo in ('alice/benign-bin', 'alice/hostile-bin'):
        with pytest.raises(hub.PickleRefusedError, match='allow_pickle=True.*weights_only=True'):
            hub.load(repo)
    with pytest.raises(Exception, match='(?i)weights.only'):  # opted in: torch.load(weights_only=True) refuses code
        hub.load('alice/hostile-bin', allow_pickle=True)
    assert RAN == []
    loaded = hub.load('alice/benign-bin', allow_pickle=True)
    assert_same_weights(model, loaded)


def test_push_never_uploads_pickles(folder, hub_server, hf_token):
    torch.save({'x': torch.zeros(1)}, folder / 'pytorch_model.bin')
    hub.push(folder, 'alice/no-pickles')
    assert 'pytorch_model.bin' not in HfApi().list_repo_files('alice/no-pickles')
    (folder / 'model.safetensors').unlink()
    with pytest.raises(hub.HubError, match='no model.safetensors.*never upload pickles'):
        hub.push(folder, 'alice/no-pickles')


def test_unknown_architecture_says_to_import_hybrid_zoo(folder, hub_server, hf_token):
    config = json.loads((folder / 'config.json').read_text())
    config['architecture'] = 'convformer_from_the_future'
    api = HfApi()
    api.create_repo('alice/unknown-arch')
    api.upload_file(
        path_or_fileobj=json.dumps(config).encode(), path_in_repo='config.json', repo_id='alice/unknown-arch'
    )
    api.upload_file(
        path_or_fileobj=folder / 'model.safetensors', path_in_repo='model.safetensors', repo_id='alice/unknown-arch'
    )
    with pytest.raises(hub.UnknownModelError, match="'convformer_from_the_future'.*config.json.*import hybrid_zoo"):
        hub.load('hf-hub:alice/unknown-arch')
    with pytest.raises(hub.UnknownModelError, match='import hybrid_zoo'):
        hub.load('convformer_from_the_future')
    with pytest.raises(RuntimeError, match='Unknown model'):  # what plain timm says
        timm.create_model('hf-hub:alice/unknown-arch', pretrained=True)


def test_the_token_never_leaks(folder, tmp_path, hub_server, hf_token, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    hub.push(folder, 'alice/no-leak')
    with pytest.raises(hub.HubError):
        hub.push(folder, 'alice/no-leak-down', endpoint=f'http://127.0.0.1:{free_port()}')
    captured = capsys.readouterr()
    assert hf_token not in caplog.text + captured.out + captured.err
    files = HfApi().snapshot_download('alice/no-leak', local_dir=tmp_path / 'download')
    assert all(hf_token.encode() not in p.read_bytes() for p in (tmp_path / 'download').rglob('*') if p.is_file()), (
        files
    )


def test_xet_against_a_server_without_it_says_what_to_set(folder, hub_server, hf_token, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_DISABLE_XET', False)  # as if the variable were unset
    with pytest.raises(hub.HubError, match='set HF_HUB_DISABLE_XET=1'):
        hub.push(folder, 'alice/xet')
