"""The local Hub server's names, headers and card metadata, through real HTTP (client and raw sockets).

Each test pins one defect of the reliability review (H1, M2, M4, M10, M11): revisions pinned to a commit, header
injection through file names, YAML alias bombs, YAML values JSON cannot carry, and non-Latin-1 names.
"""

from __future__ import annotations

import base64
import json
import socket
from urllib.parse import quote

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RevisionNotFoundError
from huggingface_hub.utils import get_session

from hybrid_zoo.hub.server.store import Op

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture
def alice(hub_server, hub_tokens) -> HfApi:
    return HfApi(token=hub_tokens['alice'])


@pytest.fixture
def repo(alice, request) -> str:
    repo_id = f'alice/{request.node.name.replace("[", "-").replace("]", "")}'[:96]
    alice.create_repo(repo_id)
    return repo_id


def raw_get(hub_server, target: str) -> tuple[int, list[bytes], bytes]:
    """GET ``target`` (sent as given) on a fresh connection: status, raw header lines, body."""
    host, port = hub_server.address.split(':')
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f'GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'.encode())
        data = b''
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    return int(lines[0].split()[1]), lines[1:], body


def assert_clean_headers(lines: list[bytes]) -> None:
    """Every header line is one printable-ASCII ``Name: value`` line: nothing injected, nothing undecodable."""
    for line in lines:
        assert all(0x20 <= b < 0x7F for b in line), line
        assert not line.lower().startswith(b'set-cookie'), line


def ndjson_commit(alice: HfApi, repo: str, path: str, content: bytes) -> tuple[int, dict]:
    lines = [
        {'key': 'header', 'value': {'summary': 'raw commit'}},
        {'key': 'file', 'value': {'path': path, 'content': base64.b64encode(content).decode(), 'encoding': 'base64'}},
    ]
    r = get_session().post(
        f'{alice.endpoint}/api/models/{repo}/commit/main',
        content='\n'.join(map(json.dumps, lines)).encode(),
        headers={'Authorization': f'Bearer {alice.token}', 'Content-Type': 'application/x-ndjson'},
    )
    return r.status_code, r.json()


# ---- H1: revisions pinned to a commit id -------------------------------------------------------------
def test_a_commit_id_pins_its_commit_whatever_refs_exist(alice, repo, hub_server):
    a = alice.upload_file(path_or_fileobj=b'GOOD', path_in_repo='w.txt', repo_id=repo).oid
    b = alice.upload_file(path_or_fileobj=b'EVIL', path_in_repo='w.txt', repo_id=repo).oid
    with pytest.raises(HfHubHTTPError, match='looks like a full commit id'):
        alice.create_branch(repo, branch=a)
    with pytest.raises(HfHubHTTPError, match='looks like a full commit id'):
        alice.create_tag(repo, tag=a, revision='main')
    assert open(hf_hub_download(repo, 'w.txt', revision=a, token=alice.token), 'rb').read() == b'GOOD'

    # a store written before names were checked may hold such refs: the commit id still wins, as in git
    refs = hub_server.store.refs('model', repo)
    refs['heads'][a] = refs['tags'][a] = b
    hub_server.store._save_refs('model', repo, refs)
    assert alice.model_info(repo, revision=a).sha == a
    url = f'{alice.endpoint}/{repo}/resolve/{a}/w.txt'
    reply = get_session().get(url)
    assert reply.content == b'GOOD' and reply.headers['X-Repo-Commit'] == a


@pytest.mark.parametrize(
    'name',
    ['0123456789abcdef0123456789abcdef01234567', '0123456789ABCDEF0123456789ABCDEF01234567', 'refs/heads/x', '-x',
     'HEAD', 'a..b', 'a//b', '/a', 'a/', 'a.', '.a', 'a/.b', 'a.lock', 'a b', 'a~1', 'a^', 'a:b', 'a?', 'a*', 'a[',
     'a\\b', 'a@{1}', '@', 'x' * 256, '分支', 'a\r\nb'],
)  # fmt: skip
def test_invalid_ref_names_are_refused(alice, hub_server, name, request):
    repo = 'alice/ref-names'
    alice.create_repo(repo, exist_ok=True)
    for kind, body in (('branch', {'startingPoint': 'main'}), ('tag', {'tag': name})):
        target = f'branch/{quote(name, safe="")}' if kind == 'branch' else 'tag/main'
        r = get_session().post(
            f'{alice.endpoint}/api/models/{repo}/{target}',
            json=body,
            headers={'Authorization': f'Bearer {alice.token}'},
        )
        assert r.status_code == 400, (kind, name, r.text)
        assert f'Invalid {kind} name' in r.json()['error']
    refs = alice.list_repo_refs(repo)
    assert [b.name for b in refs.branches] == ['main'] and refs.tags == []


def test_valid_ref_names_are_accepted(alice, repo):
    for name in ('dev', 'v1.0', 'feature/x-y_z', 'release/2024.05'):
        alice.create_branch(repo, branch=name)
        alice.create_tag(repo, tag=f't-{name}', revision=name)
    assert len(alice.list_repo_refs(repo).branches) == 5


# ---- M2: control characters in file names, header injection ---------------------------------------------
def test_control_characters_in_paths_are_refused_at_commit(alice, repo):
    for path in ('inj\r\nSet-Cookie: sid=attacker', 'a\x00b', 'tab\there', 'del\x7f', 'c1\x85x', 'x/.git/config'):
        status, body = ndjson_commit(alice, repo, path, b'payload')
        assert status == 400 and 'Invalid path in repo' in body['error'], (path, status, body)
    with pytest.raises(HfHubHTTPError, match='Invalid path in repo'):
        alice.upload_file(path_or_fileobj=b'x', path_in_repo='bell\x07.txt', repo_id=repo)
    assert alice.list_repo_files(repo) == ['.gitattributes']


def test_no_header_carries_control_characters(alice, repo, hub_server):
    # an error message that quotes the request: the CR must not reach X-Error-Message raw
    status, lines, body = raw_get(hub_server, f'/{repo}/resolve/main/inj%0D%0ASet-Cookie:%20sid=attacker')
    assert status == 404 and json.loads(body)['error']
    assert_clean_headers(lines)

    # a file of a store written before names were checked: served with a safe Content-Disposition
    store, name = hub_server.store, 'inj\r\nSet-Cookie: sid=attacker'
    head = store.resolve('model', repo, 'main')
    files = dict(store.read_commit('model', repo, head).files)
    files[name] = store.entry_for(store.put_bytes(b'payload'), False)
    commit = store._new_commit((head,), files, 'old', '', 'alice')
    store._save_commit('model', repo, commit)
    refs = store.refs('model', repo)
    refs['heads']['main'] = commit.id
    store._save_refs('model', repo, refs)
    status, lines, body = raw_get(hub_server, f'/{repo}/resolve/main/{quote(name)}')
    assert status == 200 and body == b'payload'
    assert_clean_headers(lines)
    assert (
        b'Content-Disposition: inline; filename="inj__Set-Cookie: sid=attacker"; filename*=UTF-8\'\'inj%0D%0ASet-Cookie%3A%20sid%3Dattacker'
        in lines
    )


# ---- M11: non-Latin-1 names -----------------------------------------------------------------------------
def test_non_latin1_names_and_revisions(alice, repo, hub_server):
    alice.upload_file(path_or_fileobj=b'hello', path_in_repo='données/模型.txt', repo_id=repo)
    assert open(hf_hub_download(repo, 'données/模型.txt', token=alice.token), 'rb').read() == b'hello'
    head = get_session().head(f'{alice.endpoint}/{repo}/resolve/main/{quote("données/模型.txt")}')
    assert head.headers['Content-Disposition'].endswith("filename*=UTF-8''%E6%A8%A1%E5%9E%8B.txt")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo, '不.txt', token=alice.token)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo, 'données/模型.txt', revision='分支', token=alice.token)
    status, lines, body = raw_get(hub_server, f'/{repo}/resolve/{quote("分支")}/{quote("不.txt")}')
    assert status == 404 and '分支' in json.loads(body)['error']
    assert_clean_headers(lines)


# ---- M4 and M10: card metadata --------------------------------------------------------------------------
def alias_bomb(depth: int) -> bytes:
    levels = ['l0: &l0 [a,a,a,a,a,a,a,a,a]'] + [
        f'l{i}: &l{i} [' + ','.join([f'*l{i - 1}'] * 9) + ']' for i in range(1, depth + 1)
    ]
    return ('---\n' + '\n'.join(levels) + '\n---\n# bomb\n').encode()


def test_yaml_aliases_are_refused_and_never_expanded(alice, repo, hub_server):
    for card in (alias_bomb(5), b'---\ntags: &a [*a]\n---\n'):
        with pytest.raises(ValueError, match='aliases'):  # the client asks /api/validate-yaml first
            alice.upload_file(path_or_fileobj=card, path_in_repo='README.md', repo_id=repo)
        status, body = ndjson_commit(alice, repo, 'README.md', card)  # a client that does not ask
        assert status == 400 and 'aliases' in body['error']
    # a bomb committed before cards were checked: model_info serves it without cardData, at once
    store = hub_server.store
    blob = store.stage_bytes(alias_bomb(6))  # 28 MB of JSON if expanded
    store.commit(
        'model',
        repo,
        'main',
        [Op('add', 'README.md', blob.sha256)],
        title='old',
        message='',
        author='alice',
        staged=[blob],
    )
    reply = get_session().get(f'{alice.endpoint}/api/models/{repo}')
    assert reply.status_code == 200 and len(reply.content) < 10_000
    assert reply.json()['cardData'] == {}


def test_card_dates_sets_and_binary_are_served_as_json(alice, repo, tmp_path):
    card = (
        b'---\nlicense: mit\ndate: 2024-05-01\nextra: !!set {a, b}\nblob: !!binary aGVsbG8=\nscore: .nan\n---\n# hi\n'
    )
    alice.upload_file(path_or_fileobj=card, path_in_repo='README.md', repo_id=repo)
    info = alice.model_info(repo)
    assert info.card_data['date'] == '2024-05-01' and sorted(info.card_data['extra']) == ['a', 'b']
    assert info.card_data['blob'] == 'aGVsbG8=' and info.card_data['license'] == 'mit'
    raw = get_session().get(f'{alice.endpoint}/api/models/{repo}').content
    json.loads(raw, parse_constant=lambda c: pytest.fail(f'non-standard JSON constant {c}'))
    snapshot = snapshot_download(repo, token=alice.token, cache_dir=tmp_path)
    assert (tmp_path / snapshot / 'README.md').read_bytes() == card
    alice.upload_file(path_or_fileobj=b'later', path_in_repo='later.txt', repo_id=repo)  # later pushes work
    assert 'later.txt' in alice.list_repo_files(repo)


def test_invalid_card_yaml_is_refused_at_commit(alice, repo):
    for card, match in ((b'---\na: [\n---\n', 'not valid YAML'), (b'---\n- a\n---\n', 'must be a YAML mapping')):
        with pytest.raises(ValueError, match=match):
            alice.upload_file(path_or_fileobj=card, path_in_repo='README.md', repo_id=repo)
        status, body = ndjson_commit(alice, repo, 'README.md', card)
        assert status == 400 and match in body['error']
    alice.upload_file(path_or_fileobj=b'# no metadata at all\n', path_in_repo='README.md', repo_id=repo)
    assert alice.model_info(repo).card_data is None or alice.model_info(repo).card_data == {}
