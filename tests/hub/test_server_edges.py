"""The local Hub server at the edges of each route, held to what the Hub and git do there.

Property tests draw requests from the whole request space (NDJSON commits and JSON bodies of every shape, ref
names, Range headers, repo ids) and check, after every request, the same contract: no 5xx, a reply within the
socket timeout, and a store that still reads back its last good state (a refused request changes nothing; an
accepted one leaves every ref readable). Deterministic tests add what a property cannot draw well: empty and
one-byte files through the real client, many concurrent clients, and slow ones.

Requests go over real sockets to an in-process server; hypothesis runs each property a bounded number of times
(``EDGES``), so the whole file stays within a few tens of seconds.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from urllib.parse import quote

import pytest
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from test_server_limits import exchange  # the one raw-socket reader of these tests

from hybrid_zoo.hub.server import HubServer
from hybrid_zoo.hub.server.store import Op

pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

ALICE, BOB = 'hf_edges_alice', 'hf_edges_bob'
REPO = 'alice/edges'
KNOWN_REPOS = ('edges', 'df', 'ref-names', 'short-files', 'busy', 'racing', 'one-of-many', 'doomed', 'gone')
SOCKET_TIMEOUT = 10.0  # a reply slower than this is a hang
# a deadline far above an example's usual few milliseconds: it flags a request the server sits on, not a slow
# machine; the database stays off so that runs leave nothing behind in the working tree
# the examples are the same on every run (tests/conftest.py's default profile; HYPOTHESIS_PROFILE=explore searches)
EDGES = settings(
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
SEEDED = {
    'empty.txt': b'',
    'one.txt': b'1',
    'text.txt': b'hello edges\n' * 8,
    'dir/two.txt': b'22',
    'dir/sub/three.txt': b'333',
}
LFS_BLOB = bytes(range(256)) * 3
LFS_OID = hashlib.sha256(LFS_BLOB).hexdigest()


# ---- plumbing -------------------------------------------------------------------------------------------------
def address(hub: HubServer) -> tuple[str, int]:
    host, port = hub.address.split(':')
    return host, int(port)


def request(hub, method: str, path: str, body: bytes = b'', auth: str | None = ALICE, headers=None):
    """One request on a fresh connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection(*address(hub), timeout=SOCKET_TIMEOUT)
    try:
        conn.request(method, path, body, {**({'Authorization': f'Bearer {auth}'} if auth else {}), **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def raw(hub, data: bytes) -> tuple[int, dict, bytes]:
    """Send ``data`` as is (headers the client library would refuse to send) and read one reply."""
    return exchange(hub, data, timeout=SOCKET_TIMEOUT)


def ndjson(*lines) -> bytes:
    return '\n'.join(json.dumps(line) for line in lines).encode()


def add_file(path: str, content: bytes) -> dict:
    return {'key': 'file', 'value': {'path': path, 'content': base64.b64encode(content).decode(), 'encoding': 'base64'}}


def commit(hub, repo: str, revision: str, *lines, auth: str = ALICE) -> tuple[int, dict]:
    lines = lines or (add_file('f.txt', b'f'),)
    status, _, body = request(
        hub, 'POST', f'/api/models/{repo}/commit/{quote(revision, safe="")}', ndjson(*lines), auth=auth
    )
    return status, json.loads(body)


def create_repo(hub, name: str, **extra) -> None:
    status, _, body = request(hub, 'POST', '/api/repos/create', json.dumps({'name': name, **extra}).encode())
    assert status == 200, body


def upload_lfs(hub, repo: str, content: bytes) -> str:
    oid = hashlib.sha256(content).hexdigest()
    batch = {'operation': 'upload', 'objects': [{'oid': oid, 'size': len(content)}]}
    status, _, body = request(hub, 'POST', f'/{repo}.git/info/lfs/objects/batch', json.dumps(batch).encode())
    assert status == 200, body
    actions = json.loads(body)['objects'][0].get('actions')
    if actions:
        href = actions['upload']['href']
        assert request(hub, 'PUT', '/' + href.split('/', 3)[3], content, auth=None)[0] == 200
    return oid


# ---- the contract checked after every request ------------------------------------------------------------------
def snapshot(hub, repo: str = REPO) -> dict:
    """Refs, visibility and every ref's tree, read from the store; each file's blob must be on disk, whole."""
    store = hub.store
    refs = store.refs('model', repo)
    trees = {}
    for kind in ('heads', 'tags', 'prs'):
        for commit_id in refs[kind].values():
            files = store.read_commit('model', repo, commit_id).files
            for path, f in files.items():
                assert store.blob_path(f.sha256).stat().st_size == f.size, (repo, path)
            trees[commit_id] = {path: f.sha256 for path, f in files.items()}
    assert list((store.root / 'objects' / 'tmp').iterdir()) == []  # nothing staged outlives its request
    return {'refs': refs, 'private': store.repo_meta('model', repo)['private'], 'trees': trees}


def reads_back(hub, state: dict, repo: str = REPO) -> None:
    """Through HTTP: the repo's info at main is its head, and one of its files downloads whole."""
    head = state['refs']['heads']['main']
    status, _, body = request(hub, 'GET', f'/api/models/{repo}')
    assert status == 200 and json.loads(body)['sha'] == head, body[:300]
    tree = state['trees'][head]
    path = min(tree)
    status, headers, body = request(hub, 'GET', f'/{repo}/resolve/main/{quote(path)}')
    assert status == 200 and headers['x-repo-commit'] == head and hashlib.sha256(body).hexdigest() == tree[path]


def check_reply(status: int, headers: dict, body: bytes) -> None:
    """Never a 5xx; a refusal is JSON with a message, in the body and in ``X-Error-Message``."""
    assert status < 500, (status, body[:500])
    if status >= 400:
        assert json.loads(body)['error'] and headers['x-error-message'], body[:300]


def settle(hub, before: dict, status: int, repo: str = REPO) -> dict:
    """The state after a request: unchanged if it was refused, readable either way."""
    after = snapshot(hub, repo)
    if status >= 400:
        assert after == before
    reads_back(hub, after, repo)
    return after


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    """A server of this module's own, with a repo that holds empty, one-byte, nested and LFS files, a branch and a
    tag; a one-second socket timeout keeps the slow-client tests short."""
    with HubServer(tmp_path_factory.mktemp('edges'), tokens={ALICE: 'alice', BOB: 'bob'}, timeout=1.0) as server:
        create_repo(server, 'edges')
        upload_lfs(server, REPO, LFS_BLOB)
        lfs = {'key': 'lfsFile', 'value': {'path': 'w.bin', 'algo': 'sha256', 'oid': LFS_OID, 'size': len(LFS_BLOB)}}
        assert commit(server, REPO, 'main', *(add_file(p, c) for p, c in SEEDED.items()), lfs)[0] == 200
        assert request(server, 'POST', f'/api/models/{REPO}/branch/dev', b'{}')[0] == 200
        assert request(server, 'POST', f'/api/models/{REPO}/tag/main', b'{"tag": "v1"}')[0] == 200
        yield server


# ---- commit payloads -------------------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
PATHS = st.sampled_from(
    ['new.txt', 'one.txt', 'empty.txt', 'dir', 'dir/', 'dir/two.txt', 'dir/sub', 'w.bin', 'README.md', 'a', 'a/b',
     'one.txt/inner', 'dir/two.txt/x', '', '.', '..', '../x', '/abs', 'a//b', 'x/.git/y', '.git', 'a\x00b', 'é/ü.txt']
) | st.text(max_size=10)  # fmt: skip
# YAML that reaches the edges of the card parser: aliases, tags, deep nesting, big numbers, odd scalars
YAML_PIECES = st.sampled_from(
    ['a: 1', 'tags: [x, y]', '&a x', '*a', '!!binary aGk=', '!!set {a}', '!!python/object:os.system x', '? [a]: 1',
     'n: 0x' + 'f' * 4000, 'n: 1' + ':0' * 3000, 'n: 0' + '7' * 5000, 'n: ' + '9' * 5000, 'n: 1e999', 'n: .nan',
     'd: 2024-13-45',
     '[[[[[[[[', '- x', '{a: {b: {c: [1]}}}', 'k: "\\u0000"', 'x: !!int 12', 'license: mit']
)  # fmt: skip
CARDS = st.lists(YAML_PIECES, max_size=4).map(lambda lines: '---\n' + '\n'.join(lines) + '\n---\n# card\n')
HEAD_MARK = '<head of the branch>'  # replaced by the commit id at run time


@st.composite
def commit_line(draw) -> dict | bytes:
    """One NDJSON line: a well-formed operation, or one with a key dropped, a value of the wrong type, an unknown key,
    content that is not base64, or a line that is not an operation at all."""
    key = draw(st.sampled_from(['header', 'file', 'lfsFile', 'deletedFile', 'deletedFolder']))
    path = draw(PATHS)
    if key == 'header':
        value = {'summary': draw(st.text(max_size=20)), 'description': draw(st.text(max_size=20))}
        if draw(st.booleans()):
            value['parentCommit'] = draw(st.sampled_from([HEAD_MARK, '0' * 40, 'main', '']))
    elif key == 'file':
        content = draw(CARDS.map(str.encode)) if path == 'README.md' else draw(st.binary(max_size=40))
        value = {'path': path, 'content': base64.b64encode(content).decode(), 'encoding': 'base64'}
    elif key == 'lfsFile':
        oid = draw(st.sampled_from([LFS_OID, hashlib.sha256(b'never uploaded').hexdigest(), LFS_OID.upper(), 'x']))
        value = {'path': path, 'algo': 'sha256', 'oid': oid, 'size': len(LFS_BLOB)}
    else:
        value = {'path': path}
    mutation = draw(
        st.sampled_from(['none'] * 6 + ['drop', 'wrong type', 'unknown key', 'bad base64', 'bad key', 'line'])
    )
    if mutation == 'drop' and value:
        del value[draw(st.sampled_from(sorted(value)))]
    elif mutation == 'wrong type' and value:
        value[draw(st.sampled_from(sorted(value)))] = draw(JSON.filter(lambda v: not isinstance(v, str)))
    elif mutation == 'unknown key':
        value[draw(st.text(min_size=1, max_size=8))] = draw(JSON)
    elif mutation == 'bad base64' and key == 'file':
        value['content'] = draw(st.sampled_from(['%%%', 'YQ', 'YQ==YQ==', 'Y Q==', '\u00e9']))
    elif mutation == 'bad key':
        key = draw(st.text(max_size=10) | st.sampled_from(['File', 'rename', 'lfs_file']))
    elif mutation == 'line':
        return draw(
            st.sampled_from([b'', b'   ', b'\xff\xfe', b'{', b'[1]', b'null', b'"file"', b'{"key": "file"}'])
            | JSON.map(lambda v: json.dumps(v).encode())
            | st.binary(max_size=20).filter(lambda b: b'\n' not in b)
        )
    return {'key': key, 'value': value}


def expected_tree(tree: dict[str, str], lines: list) -> dict[str, str]:
    """The tree an accepted commit must leave: each operation applied in order, as the Hub does (unknown keys in an
    operation are ignored). Raises on a line the server should have refused, which fails the test."""
    files = dict(tree)
    for line in lines:
        if not isinstance(line, dict) or line['key'] == 'header':
            assert isinstance(line, dict) or not line.strip(), f'accepted a commit with the line {line!r}'
            continue
        key, value = line['key'], line['value']
        path = value['path']
        if key == 'file':
            assert (value.get('encoding') or 'base64') == 'base64'  # null or absent: the default
            files[path] = hashlib.sha256(base64.b64decode(value['content'], validate=True)).hexdigest()
        elif key == 'lfsFile':
            files[path] = value['oid']
        elif key == 'deletedFile':
            del files[path]
        else:
            gone = [p for p in files if p.startswith(path.rstrip('/') + '/')]
            assert gone, f'accepted deleting the empty folder {path!r}'
            for p in gone:
                del files[p]
    return files


def is_tree(paths) -> bool:
    """What git can store: no path is both a file and a folder (``a`` and ``a/b``)."""
    paths = set(paths)
    return not any('/'.join(p.split('/')[:i]) in paths for p in paths for i in range(1, p.count('/') + 1))


@settings(EDGES, max_examples=80)
@given(lines=st.lists(commit_line(), max_size=4), revision=st.sampled_from(['main', 'dev', 'v1', 'refs/pr/9', 'nope']))
@example(lines=[{'key': 'file', 'value': {'path': 'new.txt', 'content': '\u00e9'}}], revision='main')
@example(lines=[add_file('README.md', b'---\nn: 0x' + b'f' * 4000 + b'\n---\n')], revision='dev')
def test_any_commit_payload_leaves_a_readable_store(hub, lines, revision):
    before = snapshot(hub)
    head = before['refs']['heads'].get(revision, '0' * 40)
    for line in lines:  # a parentCommit that names the branch's head is the well-formed case
        if (
            isinstance(line, dict)
            and isinstance(line['value'], dict)
            and line['value'].get('parentCommit') == HEAD_MARK
        ):
            line['value']['parentCommit'] = head
    body = b'\n'.join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines)
    status, headers, reply = request(hub, 'POST', f'/api/models/{REPO}/commit/{quote(revision, safe="")}', body)
    check_reply(status, headers, reply)
    after = settle(hub, before, status)
    if status < 400:
        assert revision in ('main', 'dev'), (revision, reply)
        new_head = after['refs']['heads'][revision]
        assert json.loads(reply)['commitOid'] == new_head
        assert hub.store.read_commit('model', REPO, new_head).parents == (head,)
        assert after['trees'][new_head] == expected_tree(before['trees'][head], lines)
        assert is_tree(after['trees'][new_head])


def test_a_path_cannot_be_a_file_and_a_folder(hub):
    """git stores trees: ``one.txt`` cannot also be a folder, nor ``dir`` a file, in one commit or across two."""
    create_repo(hub, 'df')
    assert commit(hub, 'alice/df', 'main', add_file('one.txt', b'1'), add_file('dir/sub/three.txt', b'3'))[0] == 200
    before = snapshot(hub, 'alice/df')
    for lines in (
        [add_file('one.txt/inner', b'x')],
        [add_file('dir', b'x')],
        [add_file('fresh', b'x'), add_file('fresh/inner', b'y')],
        [add_file('dir/sub/three.txt/deeper/x', b'z')],
    ):
        status, reply = commit(hub, 'alice/df', 'main', *lines)
        assert status == 409 and 'both a file and a folder' in reply['error'], (lines, reply)
        assert settle(hub, before, status, 'alice/df') == before
    # replacing a folder by a file of its name in one commit is fine: the folder is gone first
    status, reply = commit(
        hub, 'alice/df', 'main', {'key': 'deletedFolder', 'value': {'path': 'dir/sub'}}, add_file('dir/sub', b's')
    )
    assert status == 200, reply
    assert set(snapshot(hub, 'alice/df')['trees'][reply['commitOid']]) == {'.gitattributes', 'one.txt', 'dir/sub'}


# ---- JSON bodies of every route ---------------------------------------------------------------------------------
ROUTES = {
    'create': ('POST', '/api/repos/create'),
    'delete': ('DELETE', '/api/repos/delete'),
    'settings': ('PUT', f'/api/models/{REPO}/settings'),
    'validate-yaml': ('POST', '/api/validate-yaml'),
    'paths-info': ('POST', f'/api/models/{REPO}/paths-info/main'),
    'preupload': ('POST', f'/api/models/{REPO}/preupload/main'),
    'branch': ('POST', f'/api/models/{REPO}/branch/from-body'),
    'tag': ('POST', f'/api/models/{REPO}/tag/main'),
    'lfs-batch': ('POST', f'/{REPO}.git/info/lfs/objects/batch'),
}
FIELDS = {  # what each route reads, with values that are right, nearly right and wrong
    'name': st.sampled_from(['made-by-body', 'x', '', '..', '-x', 'a/b', 'a' * 97, 'é']) | st.text(max_size=10),
    'organization': st.sampled_from(['alice', 'bob', 'zoo', '', '../x']),
    'type': st.sampled_from(['model', 'dataset', 'space', 'models', '']),
    'private': st.booleans() | st.sampled_from([0, 1, 'yes', None]),
    'visibility': st.sampled_from(['public', 'private', 'protected', 'banana', '']),
    'content': CARDS | st.text(max_size=30),
    'paths': st.lists(PATHS, max_size=4) | PATHS,
    'expand': st.booleans() | st.sampled_from(['true', 'True', '1', [True], []]),
    'files': st.lists(
        st.fixed_dictionaries(
            {'path': PATHS},
            optional={'size': st.integers(-(2**70), 2**70) | JSON, 'sample': st.sampled_from(['', 'AA==', '%%', 'é'])},
        )
        | JSON,
        max_size=3,
    ),
    'startingPoint': st.sampled_from(['main', 'dev', 'v1', 'nope', '0' * 40, 'refs/heads/dev']),
    'tag': st.sampled_from(['t1', 'v1', 'main', 'a..b', 'refs/tags/x', '']) | st.text(max_size=10),
    'message': st.text(max_size=10),
    'operation': st.sampled_from(['upload', 'download', '']),
    'objects': st.lists(
        st.fixed_dictionaries(
            {}, optional={'oid': st.sampled_from([LFS_OID, LFS_OID.upper(), 'x']) | JSON, 'size': JSON}
        )
        | JSON,
        max_size=3,
    ),
}
BODIES = (
    st.dictionaries(st.sampled_from(sorted(FIELDS)), JSON, max_size=4)
    | st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})
    )
    | JSON
).map(lambda v: json.dumps(v).encode()) | st.sampled_from([b'', b'{', b'\xff', b'[' * 5000, b'{"a": 1e999999}'])


@settings(EDGES, max_examples=120)
@given(route=st.sampled_from(sorted(ROUTES)), body=BODIES)
@example(route='preupload', body=b'{"files": [{"path": "a.txt", "sample": "\\u00e9"}]}')
@example(route='preupload', body=b'{"files": [{"path": "a.txt", "size": -1}]}')
@example(route='settings', body=b'{"visibility": "banana"}')
@example(route='validate-yaml', body=b'{"content": null}')
def test_any_json_body_gets_a_reply_and_harms_nothing(hub, route, body):
    # deleting (or creating first) the repos of the other tests is not a malformed request
    assume(not any(f'"{name}"'.encode() in body for name in KNOWN_REPOS))
    before = snapshot(hub)
    method, path = ROUTES[route]
    status, headers, reply = request(hub, method, path, body)
    check_reply(status, headers, reply)
    try:
        sent = json.loads(body)
    except (ValueError, RecursionError):
        sent = None
    if route in ('create', 'settings') and isinstance(sent, dict) and sent.get('visibility') is not None:
        space = route == 'create' and sent.get('type') == 'space'
        if sent['visibility'] not in ('public', 'private', *(('protected',) if space else ())):
            assert status >= 400, (sent, reply)  # the Hub knows no other visibility
    after = settle(hub, before, status)
    if route in ('validate-yaml', 'paths-info', 'preupload', 'create', 'delete', 'lfs-batch'):
        assert after == before  # none of these may touch this repo, whatever they answer
    if status < 400 and route in ('paths-info', 'preupload', 'lfs-batch'):
        json.loads(reply)


# ---- refs: branches, tags, the default branch, against git's rules ------------------------------------------------
GIT = shutil.which('git')
SERVER_ONLY_RULES = re.compile(r'^(?![0-9a-fA-F]{40}$)(?!refs/)(?!-)(?!HEAD$)[A-Za-z0-9._/-]{1,255}$')


def git_accepts(kind: str, name: str) -> bool:
    """``git check-ref-format refs/<kind>/<name>``: the rules every ref name of git and the Hub follows."""
    if '\x00' in name:
        return False  # cannot even be passed to git
    return subprocess.run([GIT, 'check-ref-format', f'refs/{kind}/{name}'], capture_output=True).returncode == 0


def ref_name_ok(name: str) -> bool:
    """git's rules, and the server's documented extra ones (ASCII letters, digits and ``._-/``; no name that looks
    like a commit id, starts with ``refs/`` or ``-``, or is ``HEAD``; at most 255 characters)."""
    return bool(SERVER_ONLY_RULES.match(name)) and git_accepts('heads', name)


REF_NAMES = st.one_of(
    st.lists(st.sampled_from(['a', 'b', 'v1', 'x.lock', '.x', '..', '', 'a.', '@{1}', 'é', 'ab~1', 'c d']), min_size=1,
             max_size=3).map('/'.join),
    st.sampled_from(['main', 'dev', 'HEAD', 'refs/heads/x', '-x', '0' * 40, 'x' * 256, '@', 'a\\b', 'a:b']),
    st.text(max_size=8),
)  # fmt: skip


@pytest.mark.skipif(GIT is None, reason='git is the oracle of ref names')
@settings(EDGES, max_examples=80)
@given(name=REF_NAMES)
@example(name='v1/a')
@example(name='main/a')
def test_ref_names_follow_git_check_ref_format(hub, name):
    """Whatever the server takes as a branch or a tag name, git takes too; on the names the server's alphabet
    allows, it takes exactly what git takes (a branch and a tag of the name, then both deleted)."""
    repo = 'alice/ref-names'
    if hub.store.repo_meta('model', repo) is None:  # main and the tag v1, nothing else
        create_repo(hub, repo.split('/')[1])
        assert request(hub, 'POST', f'/api/models/{repo}/tag/main', b'{"tag": "v1"}')[0] == 200
    before = snapshot(hub, repo)
    branch = request(hub, 'POST', f'/api/models/{repo}/branch/{quote(name, safe="")}', b'{"startingPoint": "v1"}')
    tag = request(hub, 'POST', f'/api/models/{repo}/tag/v1', json.dumps({'tag': name}).encode())
    try:
        for (status, headers, body), existing in ((branch, 'main'), (tag, 'v1')):
            check_reply(status, headers, body)
            if not name:  # an empty branch name leaves no route to post to (404)
                continue
            # git keeps refs as files: 'main' (or 'v1') cannot also be a folder of refs
            taken = name == existing or name.startswith(f'{existing}/')
            assert status == (400 if not ref_name_ok(name) else 409 if taken else 200), (name, body)
    finally:
        for kind, (status, _, _) in (('heads', branch), ('tags', tag)):
            if status == 200:
                assert git_accepts(kind, name)
                route = 'branch' if kind == 'heads' else 'tag'
                assert request(hub, 'DELETE', f'/api/models/{repo}/{route}/{quote(name, safe="")}')[0] == 200
    assert snapshot(hub, repo) == before


def run_ref_machine(hub, machine_settings: settings) -> None:
    repos = itertools.count()

    class Refs(RuleBasedStateMachine):
        """Branches and tags of a fresh repo, against a model of git's refs: names by git's rules, no name that is
        both a ref and a folder of refs (``a`` and ``a/b``), ``main`` never deleted, commits only to branches."""

        def __init__(self):
            super().__init__()
            self.repo = f'alice/refs-{next(repos)}-{time.monotonic_ns()}'
            create_repo(hub, self.repo.split('/')[1])
            self.branches = {'main': hub.store.refs('model', self.repo)['heads']['main']}
            self.tags: dict[str, str] = {}

        def url(self, *parts: str) -> str:
            return '/'.join([f'/api/models/{self.repo}', *(quote(p, safe='') for p in parts)])

        def revisions(self) -> list[str]:
            return sorted(self.branches) + sorted(self.tags) + sorted(set(self.branches.values()))

        def resolve(self, revision: str) -> str | None:
            if revision in self.branches.values() or revision in self.tags.values():
                return revision
            return self.branches.get(revision.removeprefix('refs/heads/'), self.tags.get(revision))

        @staticmethod
        def conflicts(name: str, refs: dict) -> bool:
            return any(n.startswith(name + '/') or name.startswith(n + '/') for n in refs)

        def expected_create(self, name: str, start: str | None, refs: dict) -> int:
            if not ref_name_ok(name):
                return 400
            if start is None:
                return 404
            return 409 if name in refs or self.conflicts(name, refs) else 200

        names = st.one_of(
            REF_NAMES.filter(bool),
            st.lists(st.sampled_from(['a', 'b', 'c']), min_size=1, max_size=3).map('/'.join),
        )

        @rule(data=st.data(), name=names)
        def create_branch(self, data, name):
            start = data.draw(st.sampled_from([*self.revisions(), 'nope']), label='start')
            status, _, body = request(
                hub, 'POST', self.url('branch', name), json.dumps({'startingPoint': start}).encode()
            )
            assert status == self.expected_create(name, self.resolve(start), self.branches), (name, start, body)
            if status == 200:
                self.branches[name] = self.resolve(start)

        @rule(data=st.data(), name=names)
        def create_tag(self, data, name):
            target = data.draw(st.sampled_from([*self.revisions(), 'nope']), label='target')
            status, _, body = request(hub, 'POST', self.url('tag', target), json.dumps({'tag': name}).encode())
            assert status == self.expected_create(name, self.resolve(target), self.tags), (name, target, body)
            if status == 200:
                self.tags[name] = self.resolve(target)

        @rule(data=st.data())
        def delete_branch(self, data):
            name = data.draw(st.sampled_from([*self.branches, 'nope']), label='branch')
            status, _, body = request(hub, 'DELETE', self.url('branch', name))
            assert status == (403 if name == 'main' else 200 if name in self.branches else 404), (name, body)
            if status == 200:
                del self.branches[name]

        @precondition(lambda self: self.tags)
        @rule(data=st.data())
        def delete_tag(self, data):
            name = data.draw(st.sampled_from([*self.tags, 'nope']), label='tag')
            status, _, body = request(hub, 'DELETE', self.url('tag', name))
            assert status == (200 if name in self.tags else 404), (name, body)
            if status == 200:
                del self.tags[name]

        @rule(data=st.data())
        def commit_to(self, data):
            target = data.draw(st.sampled_from([*self.branches, *self.tags, 'nope']), label='revision')
            status, reply = commit(hub, self.repo, target, add_file(f'f{time.monotonic_ns()}.txt', b'x'))
            assert status == (200 if target in self.branches else 404), (target, reply)
            if status == 200:
                self.branches[target] = reply['commitOid']

        @invariant()
        def refs_are_the_model(self):
            status, _, body = request(hub, 'GET', self.url('refs'))
            refs = json.loads(body)
            assert {b['name']: b['targetCommit'] for b in refs['branches']} == self.branches
            assert {t['name']: t['targetCommit'] for t in refs['tags']} == self.tags
            for prefix, model in (('refs/heads/', self.branches), ('refs/tags/', self.tags)):
                for name, commit_id in model.items():
                    status, _, body = request(hub, 'GET', self.url('revision', prefix + name))
                    assert status == 200 and json.loads(body)['sha'] == commit_id, (name, body)

    run_state_machine_as_test(Refs, settings=machine_settings)


@pytest.mark.skipif(GIT is None, reason='git is the oracle of ref names')
def test_branch_and_tag_operations_follow_git(hub):
    run_ref_machine(hub, settings(EDGES, max_examples=10, stateful_step_count=15))


def test_the_default_branch_cannot_be_deleted(hub):
    before = snapshot(hub)
    for path in ('branch/main', 'branch/refs%2Fheads%2Fmain'):
        status, headers, body = request(hub, 'DELETE', f'/api/models/{REPO}/{path}')
        check_reply(status, headers, body)
        assert status in (403, 404) and settle(hub, before, status) == before
    assert json.loads(request(hub, 'DELETE', f'/api/models/{REPO}/branch/main')[2])['error'] == (
        "The default branch 'main' cannot be deleted"
    )


# ---- Range headers -----------------------------------------------------------------------------------------------
DIGITS = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 300).map(lambda n: f'000{n}'),
    st.integers(0, 2**80).map(str),
    st.integers(3000, 6000).map(lambda n: '9' * n),  # past Python's 4,300-digit int() limit
)
SPECS = st.tuples(DIGITS | st.just(''), DIGITS | st.just('')).map('-'.join)
RANGES = st.one_of(
    st.tuples(st.sampled_from(['bytes', 'Bytes', 'BYTES', 'items', '']), st.lists(SPECS, min_size=1, max_size=2)).map(
        lambda t: f'{t[0]}={",".join(t[1])}'
    ),
    st.tuples(st.sampled_from(['bytes=', 'bytes=-', 'bytes= ', 'bytes=0-', ' bytes=']), DIGITS).map(''.join),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
)
RANGE_FILES = {
    'empty.txt': b'',
    'one.txt': b'1',
    'dir/two.txt': b'22',
    'text.txt': SEEDED['text.txt'],
    'w.bin': LFS_BLOB,
}


def expected_range(spec: str, size: int) -> tuple[int, int, int]:
    """RFC 9110 section 14: (status, start, end). One ``bytes`` range (the unit is case-insensitive) is served;
    any other header is ignored (200); a range past the end, an empty suffix or ``last < first`` is 416. A
    zero-length file has no byte to point at: a suffix range gets the whole (empty) file, any other range 416."""
    m = re.fullmatch(r'bytes=(\d*)-(\d*)', spec.strip(), re.IGNORECASE)
    if not m or not (m.group(1) or m.group(2)):
        return 200, 0, size
    first, last = m.group(1), m.group(2)

    def number(digits: str) -> int:
        digits = digits.lstrip('0') or '0'
        return int(digits) if len(digits) < 30 else 1 << 100

    if not first:
        suffix = number(last)
        if suffix == 0:
            return 416, 0, 0
        return (200, 0, 0) if size == 0 else (206, max(size - suffix, 0), size)
    first_n, last_n = number(first), number(last) if last else None
    if last_n is not None and last_n < first_n:
        return 416, 0, 0
    if first_n >= size:
        return 416, 0, 0
    return 206, first_n, size if last_n is None else min(last_n + 1, size)


@settings(EDGES, max_examples=150)
@given(path=st.sampled_from(sorted(RANGE_FILES)), spec=RANGES, method=st.sampled_from(['GET', 'GET', 'HEAD']))
@example(path='one.txt', spec='bytes=5-', method='GET')
@example(path='empty.txt', spec='bytes=0-', method='GET')
@example(path='empty.txt', spec='bytes=-5', method='GET')
@example(path='text.txt', spec='bytes=' + '9' * 5000 + '-', method='GET')
@example(path='text.txt', spec='Bytes=0-0', method='GET')
def test_range_requests_follow_rfc_9110(hub, path, spec, method):
    content = RANGE_FILES[path]
    status, headers, body = raw(
        hub, f'{method} /{REPO}/resolve/v1/{path} HTTP/1.1\r\nHost: x\r\nRange: {spec}\r\n\r\n'.encode()
    )
    want, start, end = expected_range(spec, len(content))
    assert status == want, (spec, status, body[:200])
    if status == 416:
        assert headers['content-range'] == f'bytes */{len(content)}'
        return
    assert int(headers['content-length']) == end - start
    if status == 206:
        assert headers['content-range'] == f'bytes {start}-{end - 1}/{len(content)}'
    if method == 'GET':
        assert body == content[start:end]


# ---- repo ids ----------------------------------------------------------------------------------------------------
ID_PARTS = st.one_of(
    st.from_regex(r'[A-Za-z0-9][A-Za-z0-9._-]{0,10}[A-Za-z0-9]', fullmatch=True),
    st.sampled_from(
        ['edges', 'a', 'a--b', 'a..b', '.a', 'a.', '-a', '_a', 'a_', 'a' * 96, 'a' * 97, 'é', 'a b', '%41']
    ),
    st.text(max_size=12),
)


def hub_accepts(repo_id: str) -> bool:
    try:
        validate_repo_id(repo_id)
        return True
    except HFValidationError:
        return False


def percent_encoded(text: str) -> str:
    """Every byte %-encoded: what a URL may carry for any character, and must mean the same."""
    return ''.join(f'%{b:02X}' for b in text.encode('utf-8', 'surrogatepass'))


@settings(EDGES, max_examples=60)
@given(namespace=st.sampled_from(['alice', 'bob']) | ID_PARTS, name=ID_PARTS)
@example(namespace='alice', name='edges')
def test_repo_ids_in_urls_and_bodies(hub, namespace, name):
    """Any repo id in a URL, %-encoded or not, gets a 4xx unless the repo exists; one the server creates is a valid
    Hub id (the client's own check) that reads back under the exact same name."""
    before = snapshot(hub)
    exists = (
        hub_accepts(f'{namespace}/{name}')
        and (hub.store.root / 'repos' / 'models' / namespace / name / 'repo.json').is_file()
    )
    for ns, nm in (
        (quote(namespace, safe=''), quote(name, safe='')),
        (percent_encoded(namespace), percent_encoded(name)),
    ):
        for url in (f'/api/models/{ns}/{nm}', f'/{ns}/{nm}/resolve/main/one.txt', f'/api/models/{ns}/{nm}/refs'):
            status, headers, body = request(hub, 'GET', url)
            check_reply(status, headers, body)
            if exists:  # one.txt may be gone: the commit property deletes files of the repo
                assert status < 400 or status == 404 and url.endswith('one.txt'), (url, body)
            else:
                assert status in (400, 404), (url, body)
    status, headers, body = request(hub, 'POST', '/api/repos/create', json.dumps({'name': name}).encode())
    check_reply(status, headers, body)
    assert status in (200, 400, 409), (name, body)
    if status == 200:
        assert hub_accepts(f'alice/{name}'), name
        reply = request(hub, 'GET', f'/api/models/alice/{quote(name, safe="")}')
        assert reply[0] == 200 and json.loads(reply[2])['id'] == f'alice/{name}'
    assert settle(hub, before, 400) == before


# ---- empty and short files, through the real client -------------------------------------------------------------
def test_empty_and_one_byte_files_round_trip(hub, tmp_path):
    api = HfApi(endpoint=hub.url, token=ALICE)
    repo = 'alice/short-files'
    api.create_repo(repo)
    files = {'empty.txt': b'', 'one.txt': b'1', 'empty.bin': b'', 'one.bin': b'\x00', 'README.md': b''}
    for path, content in files.items():
        api.upload_file(path_or_fileobj=content, path_in_repo=path, repo_id=repo)
    info = {i.path: i for i in api.get_paths_info(repo, list(files))}
    assert {p: i.size for p, i in info.items()} == {p: len(c) for p, c in files.items()}
    # the client sends empty files as regular ones whatever their name (LFS storage refuses empty objects)
    assert info['empty.bin'].lfs is None and info['one.bin'].lfs.sha256 == hashlib.sha256(b'\x00').hexdigest()
    for path, content in files.items():
        local = hf_hub_download(repo, path, endpoint=hub.url, token=ALICE, cache_dir=tmp_path)
        assert open(local, 'rb').read() == content, path
        status, headers, _ = request(hub, 'HEAD', f'/{repo}/resolve/main/{path}')
        assert status == 200 and headers['content-length'] == str(len(content))
    assert api.model_info(repo).card_data in (None, {})


# ---- many clients at once ----------------------------------------------------------------------------------------
def test_a_burst_of_clients_is_served_at_once(hub):
    """Sixty clients connecting in the same instant: none waits for TCP's one-second retry of a dropped connection
    (what a listen backlog of 5 does)."""
    barrier = threading.Barrier(60)

    def client(_) -> float:
        barrier.wait()
        start = time.monotonic()
        status, _, body = request(hub, 'GET', '/api/whoami-v2')
        assert status == 200, body
        return time.monotonic() - start

    with ThreadPoolExecutor(60) as pool:
        latencies = sorted(pool.map(client, range(60)))
    assert latencies[-1] < 1.0, latencies[-5:]  # a dropped connection is retried after 1 s


def test_concurrent_commits_are_all_kept(hub):
    create_repo(hub, 'busy')
    threads, per_thread = 8, 5

    def client(t: int) -> list[str]:
        return [commit(hub, 'alice/busy', 'main', add_file(f't{t}/c{c}.txt', b'%d' % c))[1]['commitOid']
                for c in range(per_thread)]  # fmt: skip

    with ThreadPoolExecutor(threads) as pool:
        acknowledged = [oid for oids in pool.map(client, range(threads)) for oid in oids]
    state = snapshot(hub, 'alice/busy')
    head = state['refs']['heads']['main']
    history = [c.id for c in hub.store.history('model', 'alice/busy', head)]
    assert len(history) == threads * per_thread + 1 and set(acknowledged) <= set(history)
    assert {f't{t}/c{c}.txt' for t in range(threads) for c in range(per_thread)} <= set(state['trees'][head])


def test_concurrent_commits_with_a_parent_are_kept_or_refused(hub):
    """Every client names the head it saw: exactly one wins per head, the others get 412, none is lost."""
    create_repo(hub, 'racing')
    head = hub.store.refs('model', 'alice/racing')['heads']['main']
    header = {'key': 'header', 'value': {'summary': 'race', 'parentCommit': head}}
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda t: commit(hub, 'alice/racing', 'main', header, add_file(f'{t}', b't')), range(8))
        )
    assert sorted(status for status, _ in replies) == [200] + [412] * 7, replies
    (won,) = [reply['commitOid'] for status, reply in replies if status == 200]
    assert [c.id for c in hub.store.history('model', 'alice/racing', won)][1:] == [head]


def test_concurrent_creates_of_one_name_make_one(hub):
    def post(path: str, body: dict) -> int:
        return request(hub, 'POST', path, json.dumps(body).encode())[0]

    for path, body in (
        ('/api/repos/create', {'name': 'one-of-many'}),
        (f'/api/models/{REPO}/branch/race', {}),
        (f'/api/models/{REPO}/tag/main', {'tag': 'race'}),
    ):
        with ThreadPoolExecutor(8) as pool:
            statuses = sorted(pool.map(post, [path] * 8, [body] * 8))
        assert statuses == [200] + [409] * 7, (path, statuses)


def test_a_repo_deleted_under_busy_clients(hub):
    """Commits, reads and ref changes racing a delete: each answered 200 or 404, never 500, and nothing left."""
    create_repo(hub, 'doomed')
    statuses: list[int] = []
    stop = threading.Event()

    def client(t: int) -> None:
        n = itertools.count()
        while not stop.is_set():
            i = next(n)
            statuses.append(commit(hub, 'alice/doomed', 'main', add_file(f'{t}-{i}.txt', b'x'))[0])
            statuses.append(request(hub, 'GET', '/api/models/alice/doomed/tree/main?recursive=1&expand=1')[0])
            statuses.append(request(hub, 'POST', f'/api/models/alice/doomed/branch/b{t}-{i}', b'{}')[0])

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(client, t) for t in range(4)]
        time.sleep(0.3)
        assert request(hub, 'DELETE', '/api/repos/delete', b'{"name": "doomed"}')[0] == 200
        time.sleep(0.2)
        stop.set()
        for f in futures:
            f.result()
    assert set(statuses) <= {200, 404} and 404 in statuses, sorted(set(statuses))
    assert not (hub.store.root / 'repos' / 'models' / 'alice' / 'doomed').exists()
    assert list((hub.store.root / 'objects' / 'tmp').iterdir()) == []


def test_the_store_refuses_work_on_a_repo_that_is_gone(hub):
    """What a request that checked the repo finds once a delete ran in between: 404, never a crash or a
    half-recreated repo folder."""
    create_repo(hub, 'gone')
    head = hub.store.refs('model', 'alice/gone')['heads']['main']
    hub.store.delete_repo('model', 'alice/gone')
    store, blob = hub.store, hub.store.stage_bytes(b'late')
    for call in (
        lambda: store.refs('model', 'alice/gone'),
        lambda: store.read_commit('model', 'alice/gone', head),
        lambda: store.resolve('model', 'alice/gone', 'main'),
        lambda: store.history('model', 'alice/gone', head),
        lambda: store.commit('model', 'alice/gone', 'main', [Op('add', 'x', blob.sha256)], title='t', message='',
                             author='alice', staged=[blob]),
        lambda: store.set_ref('model', 'alice/gone', 'heads', 'dev', head),
        lambda: store.set_ref('model', 'alice/gone', 'tags', 'v1', None),
        lambda: store.set_private('model', 'alice/gone', True),
    ):  # fmt: skip
        with pytest.raises(Exception) as e:
            call()
        assert getattr(e.value, 'status', None) == 404 and 'alice/gone' in str(e.value), e.value
    store.discard([blob])
    assert not (hub.store.root / 'repos' / 'models' / 'alice' / 'gone').exists()


# ---- slow clients ------------------------------------------------------------------------------------------------
def test_a_slow_but_steady_client_is_served_and_blocks_nobody(hub):
    body = ndjson(add_file('slow.txt', b'sent slowly'))
    head = (
        f'POST /api/models/{REPO}/commit/dev HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ALICE}\r\n'
        f'Content-Length: {len(body)}\r\n\r\n'
    ).encode()
    data = head + body
    pieces = [data[i : i + len(data) // 12 + 1] for i in range(0, len(data), len(data) // 12 + 1)]
    with socket.create_connection(address(hub), timeout=SOCKET_TIMEOUT) as s:
        for piece in pieces:  # each gap under the one-second timeout, the whole well over it
            s.sendall(piece)
            start = time.monotonic()
            assert request(hub, 'GET', f'/api/models/{REPO}')[0] == 200
            assert time.monotonic() - start < 0.9  # the slow one holds no lock the others need
            time.sleep(0.12)
        reply = s.recv(1 << 16)
    assert reply.startswith(b'HTTP/1.1 200'), reply[:200]
    assert 'slow.txt' in snapshot(hub)['trees'][hub.store.refs('model', REPO)['heads']['dev']]


def closed(s: socket.socket) -> bool:
    """The server closed ``s`` (whatever it sent before)."""
    s.settimeout(2)
    try:
        while s.recv(1 << 16):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_clients_and_one_that_never_reads(hub):
    """Thirty half-sent requests and a client that asks for 12 MB and reads nothing: others are served at once, and
    each stalled connection is dropped after the timeout."""
    store = hub.store
    big = store.stage_bytes(b'b' * (12 << 20))  # more than the kernel buffers between the two ends
    store.commit('model', REPO, 'dev', [Op('add', 'big.txt', big.sha256)], title='big', message='', author='alice',
                 staged=[big])  # fmt: skip
    stalled = []
    for i in range(30):
        s = socket.create_connection(address(hub), timeout=SOCKET_TIMEOUT)
        s.sendall(b'GET /api/models/alice/edges HTTP/1.1\r\nHost: x\r\n' if i % 2 else b'POST /api/repos/cre')
        stalled.append(s)
    hog = socket.socket()
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window from the start
    hog.settimeout(SOCKET_TIMEOUT)
    hog.connect(address(hub))
    hog.sendall(f'GET /{REPO}/resolve/dev/big.txt HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
    try:
        start = time.monotonic()
        for _ in range(5):
            assert request(hub, 'GET', f'/{REPO}/resolve/v1/one.txt')[2] == b'1'  # v1 never moves
        assert time.monotonic() - start < 1.0
        time.sleep(1.5)  # past the server's one-second timeout
        assert all(closed(s) for s in stalled)
        received = 0
        hog.settimeout(3)
        try:
            while chunk := hog.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 12 << 20  # cut off mid-reply, not waited on forever
    finally:
        for s in [*stalled, hog]:
            s.close()


@pytest.mark.parametrize('route', sorted(ROUTES))
def test_a_null_field_is_read_as_absent_on_every_route(hub, route):
    """JSON null for any field a route reads is "not given" (a CI run found validate-yaml's content: null a 500)."""
    method, path = ROUTES[route]
    for name in sorted(FIELDS):
        if route == 'delete' and name in ('name', 'organization'):
            continue  # a delete with a real name would delete another test's repo
        status, headers, reply = request(hub, method, path, json.dumps({name: None}).encode())
        check_reply(status, headers, reply)
