"""The local Hub server against the real huggingface_hub client: repos, revisions, access, LFS, storage."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import get_session

from hybrid_zoo.hub.server import HubServer, parse_tokens

pytestmark = [
    pytest.mark.hub,
    # huggingface_hub's LFS upload hands httpx a file object as `data=`; its deprecation is not ours to fix
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]


@pytest.fixture
def alice(hub_server, hub_tokens) -> HfApi:
    return HfApi(token=hub_tokens['alice'])


def test_repo_lifecycle_revisions_and_history(alice, hub_server, request):
    repo = f'alice/{request.node.name}'
    url = alice.create_repo(repo)
    assert url.repo_id == repo
    assert alice.create_repo(repo, exist_ok=True).repo_id == repo  # the 409 carries the url
    with pytest.raises(HfHubHTTPError, match='409'):
        alice.create_repo(repo)

    alice.upload_file(path_or_fileobj=b'v1', path_in_repo='notes/a.txt', repo_id=repo, commit_message='first')
    alice.create_branch(repo, branch='dev')
    alice.upload_file(path_or_fileobj=b'v2', path_in_repo='notes/a.txt', repo_id=repo, revision='dev')
    alice.create_tag(repo, tag='v1.0', revision='main')

    refs = alice.list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {'main', 'dev'} and [t.name for t in refs.tags] == ['v1.0']
    commits = alice.list_repo_commits(repo)
    assert [c.title for c in commits] == ['first', 'initial commit']
    assert commits[0].authors == ['alice']
    assert len(alice.list_repo_commits(repo, revision='dev')) == 3

    main_file = hf_hub_download(repo, 'notes/a.txt', token=alice.token)
    dev_file = hf_hub_download(repo, 'notes/a.txt', revision='dev', token=alice.token)
    tag_file = hf_hub_download(repo, 'notes/a.txt', revision='v1.0', token=alice.token)
    sha_file = hf_hub_download(repo, 'notes/a.txt', revision=commits[0].commit_id, token=alice.token)
    assert [open(f, 'rb').read() for f in (main_file, dev_file, tag_file, sha_file)] == [b'v1', b'v2', b'v1', b'v1']

    assert [f.path for f in alice.list_repo_tree(repo)] == ['notes', '.gitattributes']
    assert [f.path for f in alice.list_repo_tree(repo, recursive=True)] == ['notes', '.gitattributes', 'notes/a.txt']
    info = alice.get_paths_info(repo, ['notes/a.txt', 'missing.txt'], expand=True)
    assert [i.path for i in info] == ['notes/a.txt'] and info[0].last_commit.title == 'first'
    assert alice.file_exists(repo, 'notes/a.txt') and not alice.file_exists(repo, 'nope.txt')
    with pytest.raises(RevisionNotFoundError):
        alice.model_info(repo, revision='no-such-branch')

    alice.delete_branch(repo, branch='dev')
    alice.delete_repo(repo)
    assert not alice.repo_exists(repo)


def test_resolve_headers_and_range(alice, request):
    repo = f'alice/{request.node.name}'
    alice.create_repo(repo)
    payload = bytes(range(256)) * 64  # binary content goes through LFS
    info = alice.upload_file(path_or_fileobj=payload, path_in_repo='w.safetensors', repo_id=repo)
    url = f'{alice.endpoint}/{repo}/resolve/main/w.safetensors'
    head = get_session().head(url)
    sha = hashlib.sha256(payload).hexdigest()
    assert head.headers['X-Repo-Commit'] == info.oid
    assert head.headers['X-Linked-Etag'] == f'"{sha}"' and head.headers['X-Linked-Size'] == str(len(payload))
    part = get_session().get(url, headers={'Range': 'bytes=10-19'})
    assert part.status_code == 206 and part.content == payload[10:20]
    assert part.headers['Content-Range'] == f'bytes 10-19/{len(payload)}'
    tail = get_session().get(url, headers={'Range': 'bytes=-5'})
    assert tail.content == payload[-5:]
    (lfs,) = alice.get_paths_info(repo, ['w.safetensors'])
    assert lfs.lfs.sha256 == sha and lfs.size == len(payload)


def test_private_repos_and_write_access(hub_server, hub_tokens, request):
    alice, bob = HfApi(token=hub_tokens['alice']), HfApi(token=hub_tokens['bob'])
    private, public = f'alice/{request.node.name}-private', f'alice/{request.node.name}-public'
    alice.create_repo(private, private=True)
    alice.create_repo(public)
    alice.upload_file(path_or_fileobj=b'secret', path_in_repo='s.txt', repo_id=private)
    assert alice.model_info(private).private

    for api in (bob, HfApi(token=False)):  # another user, and nobody
        with pytest.raises(RepositoryNotFoundError):
            api.model_info(private)
        with pytest.raises(RepositoryNotFoundError):
            api.hf_hub_download(private, 's.txt')
        assert not api.repo_exists(private)
    with pytest.raises(HfHubHTTPError, match='403'):
        bob.upload_file(path_or_fileobj=b'x', path_in_repo='x.txt', repo_id=public)
    with pytest.raises(HfHubHTTPError, match='403'):
        bob.create_repo(f'alice/{request.node.name}-by-bob')
    with pytest.raises(HfHubHTTPError, match='403'):
        HfApi(token=hub_tokens['carol']).create_repo(f'carol/{request.node.name}')  # read-only token
    alice.create_repo(f'zoo/{request.node.name}')  # an org alice belongs to
    with pytest.raises(HfHubHTTPError, match='Invalid user token'):
        HfApi(token='hf_not_a_token').whoami()


def test_dataset_repos_and_pull_requests(alice, request):
    repo = f'alice/{request.node.name}'
    alice.create_repo(repo, repo_type='dataset')
    alice.upload_file(path_or_fileobj=b'a,b\n1,2\n', path_in_repo='data.csv', repo_id=repo, repo_type='dataset')
    assert alice.dataset_info(repo).siblings[-1].rfilename == 'data.csv'
    pr = alice.upload_file(
        path_or_fileobj=b'a,b\n3,4\n', path_in_repo='data.csv', repo_id=repo, repo_type='dataset', create_pr=True
    )
    assert pr.pr_url.endswith('/discussions/1')
    assert (
        alice.list_repo_refs(repo, repo_type='dataset', include_pull_requests=True).pull_requests[0].ref == 'refs/pr/1'
    )
    main = alice.hf_hub_download(repo, 'data.csv', repo_type='dataset')
    pr_file = alice.hf_hub_download(repo, 'data.csv', repo_type='dataset', revision='refs/pr/1')
    assert open(main).read() != open(pr_file).read()
    assert not alice.repo_exists(repo)  # a dataset is not a model repo


def test_store_is_content_addressed_and_survives_restart(tmp_path, hub_tokens):
    token = hub_tokens['alice']
    with HubServer(tmp_path, tokens={token: 'alice'}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        for name in ('one', 'two'):
            api.create_repo(f'alice/{name}')
            api.upload_file(path_or_fileobj=b'same bytes', path_in_repo='f.txt', repo_id=f'alice/{name}')
        port = int(hub.url.rsplit(':', 1)[1])
    blobs = [p for p in (tmp_path / 'objects').rglob('*') if p.is_file() and p.parent.name != 'tmp']
    assert sum(p.read_bytes() == b'same bytes' for p in blobs) == 1
    with HubServer(tmp_path, port=port, tokens={token: 'alice'}) as hub:
        api = HfApi(endpoint=hub.url, token=token)
        assert api.list_repo_files('alice/two') == ['.gitattributes', 'f.txt']
        assert [c.title for c in api.list_repo_commits('alice/one')][-1] == 'initial commit'


def test_lfs_upload_must_match_its_oid(alice, hub_server, request):
    repo = f'alice/{request.node.name}'
    alice.create_repo(repo)
    oid = hashlib.sha256(b'real content').hexdigest()
    batch = get_session().post(
        f'{alice.endpoint}/{repo}.git/info/lfs/objects/batch',
        json={'operation': 'upload', 'objects': [{'oid': oid, 'size': 12}]},
        headers={'Authorization': f'Bearer {alice.token}'},
    )
    href = batch.json()['objects'][0]['actions']['upload']['href']
    assert get_session().put(href, content=b'fake content').status_code == 400
    assert get_session().put(href, content=b'real content').status_code == 200
    assert hub_server.store.has_blob(oid)


def test_token_specs():
    assert parse_tokens(['alice:t1', 'bob:t2:read']) == {'t1': ('alice', 'write'), 't2': ('bob', 'read')}
    with pytest.raises(ValueError):
        parse_tokens(['no-token'])
    with pytest.raises(ValueError, match='each token must be unique'):
        parse_tokens(['alice:same', 'bob:same'])


def test_cli_serves_until_interrupted(tmp_path, hub_tokens):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        '-m',
        'hybrid_zoo_cli',
        'hub-server',
        '--port',
        str(port),
        '--data-dir',
        str(tmp_path),
        '--token',
        f'alice:{hub_tokens["alice"]}',
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = proc.stdout.readline()
        assert f'http://127.0.0.1:{port}' in banner and hub_tokens['alice'] not in banner
        api = HfApi(endpoint=f'http://127.0.0.1:{port}', token=hub_tokens['alice'])
        deadline = time.monotonic() + 10
        while True:
            try:
                assert api.whoami()['name'] == 'alice'
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        api.create_repo('alice/from-cli')
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0, out
    assert hub_tokens['alice'] not in out
    assert (tmp_path / 'repos' / 'models' / 'alice' / 'from-cli' / 'repo.json').is_file()
    assert os.path.isdir(tmp_path / 'objects')
