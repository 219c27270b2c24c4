"""What the local Hub server reads, keeps and for how long: bodies (M3), sockets (L8), LFS uploads (L9), and the
general contract that every malformed request gets a 4xx with a message, never a 5xx, a traceback or a path.

Requests here are raw bytes on a socket, so a server that waits for a body it should refuse shows up as a
timeout of the test's socket, not as a hung test.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import socket
import time

import pytest

from hybrid_zoo.hub.server import HubServer

ALICE, BOB, CAROL = 'hf_limits_alice', 'hf_limits_bob', 'hf_limits_carol'


@pytest.fixture(scope='module')
def hub(tmp_path_factory):
    """A server of this module's own, with a short socket timeout and short-lived upload URLs."""
    tokens = {ALICE: 'alice', BOB: 'bob', CAROL: ('carol', 'read')}
    with HubServer(tmp_path_factory.mktemp('limits'), tokens=tokens, timeout=1.0, ticket_ttl=2.0) as server:
        for name in ('repo', 'other'):
            request(server, 'POST', '/api/repos/create', json.dumps({'name': name}).encode(), auth=ALICE)
        yield server


def address(hub: HubServer) -> tuple[str, int]:
    host, port = hub.address.split(':')
    return host, int(port)


def request(hub, method, path, body=b'', auth=None, headers=None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection(*address(hub), timeout=10)
    conn.request(method, path, body, {**({'Authorization': f'Bearer {auth}'} if auth else {}), **(headers or {})})
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def exchange(hub, raw: bytes, timeout: float = 5.0, sock: socket.socket | None = None) -> tuple[int, dict, bytes]:
    """Send ``raw`` and read one reply (status, headers, body); the socket times out if no reply comes."""
    s = sock or socket.create_connection(address(hub), timeout=timeout)
    try:
        s.sendall(raw)
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = s.recv(1 << 16)
            assert chunk, f'connection closed without a reply to {raw[:60]!r}'
            data += chunk
        head, _, body = data.partition(b'\r\n\r\n')
        lines = head.decode('latin-1').split('\r\n')
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(':') for line in lines[1:])}
        while not raw.startswith(b'HEAD ') and len(body) < int(headers.get('content-length', 0)):
            chunk = s.recv(1 << 16)  # a reply to HEAD has no body, whatever its Content-Length says
            assert chunk, 'connection closed inside the reply body'
            body += chunk
        return int(lines[0].split()[1]), headers, body
    finally:
        if sock is None:
            s.close()


def head(method: str, path: str, *extra: str) -> bytes:
    return '\r\n'.join([f'{method} {path} HTTP/1.1', 'Host: x', *extra, '', '']).encode()


def commit_body(path: str, content: bytes, *more: dict) -> bytes:
    lines = [
        {'key': 'header', 'value': {'summary': 'x'}},
        {'key': 'file', 'value': {'path': path, 'content': base64.b64encode(content).decode(), 'encoding': 'base64'}},
        *more,
    ]
    return '\n'.join(map(json.dumps, lines)).encode()


def objects(hub) -> set[str]:
    return {p.name for p in (hub.store.root / 'objects').rglob('*') if p.is_file()}


# ---- M3: bodies -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'method, path, auth, status',
    [
        ('POST', '/api/whoami-v2', 'wrong', 401),
        ('POST', '/api/repos/create', None, 401),
        ('POST', '/api/repos/create', CAROL, 403),
        ('DELETE', '/api/repos/delete', None, 401),
        ('PUT', '/api/models/alice/repo/settings', None, 401),
        ('POST', '/api/models/alice/repo/commit/main', BOB, 403),
        ('POST', '/alice/repo.git/info/lfs/objects/batch', None, 401),
    ],
)
def test_bodies_are_not_read_before_the_caller_is_allowed(hub, method, path, auth, status):
    """A 300 MB body that is never sent: the refusal comes at once, and the connection is closed."""
    extra = [f'Authorization: Bearer {auth}'] if auth else []
    got, headers, body = exchange(hub, head(method, path, *extra, f'Content-Length: {300 << 20}'))
    assert got == status and json.loads(body)['error']
    assert headers['connection'] == 'close'


def test_oversized_bodies_are_refused_with_413(hub):
    auth = f'Authorization: Bearer {ALICE}'
    status, _, body = exchange(hub, head('POST', '/api/repos/create', auth, f'Content-Length: {100 << 20}'))
    assert status == 413 and 'limited to 8 MiB' in json.loads(body)['error']
    # chunked: refused at the chunk header that goes past the cap, before its data comes
    status, _, body = exchange(
        hub, head('POST', '/api/repos/create', auth, 'Transfer-Encoding: chunked') + b'fffffffff\r\n'
    )
    assert status == 413 and 'limited to 8 MiB' in json.loads(body)['error']
    # a regular file over the Hub's 10 MiB belongs in LFS; the small rest of the body is drained (keep-alive)
    conn = http.client.HTTPConnection(*address(hub), timeout=30)
    conn.request(
        'POST',
        '/api/models/alice/repo/commit/main',
        commit_body('big.txt', b'x' * (11 << 20)),
        {'Authorization': f'Bearer {ALICE}'},
    )
    r = conn.getresponse()
    assert r.status == 413 and 'through LFS' in json.loads(r.read())['error']
    conn.request('GET', '/api/models/alice/repo')
    r = conn.getresponse()  # the same connection still parses requests where they start
    assert r.status == 200 and 'big.txt' not in r.read().decode()
    conn.close()


def test_expect_continue_is_answered_only_when_the_body_is_wanted(hub):
    body = json.dumps({'name': 'expect-continue'}).encode()
    with socket.create_connection(address(hub), timeout=5) as s:
        refused = head('POST', '/api/repos/create', 'Expect: 100-continue', f'Content-Length: {len(body)}')
        assert exchange(hub, refused, sock=s)[0] == 401  # no "100 Continue" first: the client keeps its body
    with socket.create_connection(address(hub), timeout=5) as s:
        s.sendall(
            head(
                'POST',
                '/api/repos/create',
                f'Authorization: Bearer {ALICE}',
                'Expect: 100-continue',
                f'Content-Length: {len(body)}',
            )
        )
        assert s.recv(100).startswith(b'HTTP/1.1 100 Continue\r\n\r\n')
        assert exchange(hub, body, sock=s)[0] == 200


# ---- L8: sockets ------------------------------------------------------------------------------------
def closed_within(s: socket.socket, seconds: float) -> bool:
    s.settimeout(seconds)
    try:
        while s.recv(1 << 16):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_stalled_and_idle_connections_are_dropped(hub):
    half_line = socket.create_connection(address(hub))
    half_line.sendall(b'GET /api/whoami-v2 HTT')
    half_body = socket.create_connection(address(hub))
    half_body.sendall(head('POST', '/api/validate-yaml', 'Transfer-Encoding: chunked') + b'64\r\n{"con')
    idle = socket.create_connection(address(hub))
    assert exchange(hub, head('GET', '/api/models/alice/repo'), sock=idle)[0] == 200  # then keep-alive, silent
    start = time.monotonic()
    assert all(closed_within(s, 5) for s in (half_line, half_body, idle))
    assert time.monotonic() - start < 5
    for s in (half_line, half_body, idle):
        s.close()
    assert request(hub, 'GET', '/api/models/alice/repo')[0] == 200


# ---- L9: LFS uploads --------------------------------------------------------------------------------
def ticket(hub, content: bytes, repo: str = 'alice/repo') -> str:
    oid = hashlib.sha256(content).hexdigest()
    batch = {'operation': 'upload', 'objects': [{'oid': oid, 'size': len(content)}]}
    status, _, body = request(
        hub, 'POST', f'/{repo}.git/info/lfs/objects/batch', json.dumps(batch).encode(), auth=ALICE
    )
    assert status == 200, body
    upload = json.loads(body)['objects'][0]['actions']['upload']
    assert upload['expires_in'] == 2
    return '/' + upload['href'].split('/', 3)[3]


def test_lfs_uploads_stop_at_the_announced_size(hub):
    content = b'sixteen bytes!!!'
    path = ticket(hub, content)
    status, headers, body = exchange(hub, head('PUT', path, f'Content-Length: {200 << 20}'))  # no body sent
    assert status == 400 and 'announced as 16 bytes' in json.loads(body)['error'] and headers['connection'] == 'close'
    status, _, body = exchange(hub, head('PUT', path, 'Transfer-Encoding: chunked') + b'100000\r\n' + b'A' * 100)
    assert status == 413 and 'limited to 16 bytes' in json.loads(body)['error']
    assert hashlib.sha256(content).hexdigest() not in objects(hub)
    assert list((hub.store.root / 'objects' / 'tmp').iterdir()) == []
    assert request(hub, 'PUT', path, content)[0] == 200  # the URL stays good until an upload succeeds


def test_upload_urls_expire_and_die_with_their_repo(hub):
    late, orphan = b'uploaded too late', b'uploaded to a deleted repo'
    path = ticket(hub, late)
    time.sleep(2.1)
    status, _, body = request(hub, 'PUT', path, late)
    assert status == 404 and 'expired' in json.loads(body)['error']

    request(hub, 'POST', '/api/repos/create', json.dumps({'name': 'doomed'}).encode(), auth=ALICE)
    path = ticket(hub, orphan, 'alice/doomed')
    request(hub, 'DELETE', '/api/repos/delete', json.dumps({'name': 'doomed'}).encode(), auth=ALICE)
    assert request(hub, 'PUT', path, orphan)[0] == 404
    assert not {hashlib.sha256(c).hexdigest() for c in (late, orphan)} & objects(hub)


def test_upload_urls_are_never_logged(hub, caplog):
    content = b'secret url'
    path = ticket(hub, content)
    with caplog.at_level(logging.DEBUG):
        assert request(hub, 'PUT', path, content)[0] == 200
        assert request(hub, 'PUT', path, content)[0] == 404  # used up
    secret = path.rsplit('/', 1)[1]
    assert 'lfs-upload/<ticket>' in caplog.text and secret not in caplog.text
    assert not any(secret in p for _, p in hub.requests)


# ---- L10 (rejected commits store nothing) -------------------------------------------------------------
def test_a_refused_commit_stores_no_blob(hub):
    content = b'blob of a commit that fails' * 1000
    body = commit_body('f.bin.txt', content, {'key': 'deletedFile', 'value': {'path': 'missing.txt'}})
    status, _, reply = request(hub, 'POST', '/api/models/alice/repo/commit/main', body, auth=ALICE)
    assert status == 404 and 'missing.txt' in json.loads(reply)['error']
    assert hashlib.sha256(content).hexdigest() not in objects(hub)
    assert list((hub.store.root / 'objects' / 'tmp').iterdir()) == []


# ---- the contract: malformed requests -----------------------------------------------------------------
def post(path: str, body: bytes, *extra: str, auth: str = ALICE) -> bytes:
    return head('POST', path, f'Authorization: Bearer {auth}', f'Content-Length: {len(body)}', *extra) + body


COMMIT = '/api/models/alice/repo/commit/main'
MALFORMED = {
    'body not JSON': post('/api/repos/create', b'{nope'),
    'body a JSON list': post('/api/repos/create', b'[1, 2]'),
    'name not a string': post('/api/repos/create', b'{"name": 5}'),
    'name with traversal': post('/api/repos/create', b'{"name": "../x"}'),
    'deeply nested JSON': post('/api/repos/create', b'[' * 100_000),
    'paths-info paths not strings': post('/api/models/alice/repo/paths-info/main', b'{"paths": [1]}'),
    'preupload file without path': post('/api/models/alice/repo/preupload/main', b'{"files": [{"size": 1}]}'),
    'preupload sample not base64': post('/api/models/alice/repo/preupload/main', b'{"files": [{"path": "a", "sample": "!!"}]}'),
    'preupload size not a number': post('/api/models/alice/repo/preupload/main', b'{"files": [{"path": "a", "size": "x"}]}'),
    'commit line not JSON': post(COMMIT, b'{"key": "header", "value": {}}\n{oops'),
    'commit value not an object': post(COMMIT, b'{"key": "file", "value": 3}'),
    'commit file without content': post(COMMIT, b'{"key": "file", "value": {"path": "a.txt"}}'),
    'commit content not base64': post(COMMIT, b'{"key": "file", "value": {"path": "a.txt", "content": "%%%"}}'),
    'commit path traversal': post(COMMIT, b'{"key": "file", "value": {"path": "../a", "content": ""}}'),
    'commit unknown operation': post(COMMIT, b'{"key": "rename", "value": {"path": "a"}}'),
    'commit lfs oid not sha256': post(COMMIT, b'{"key": "lfsFile", "value": {"path": "a.bin", "oid": "xyz"}}'),
    'commit parent not a string': post(COMMIT, b'{"key": "header", "value": {"parentCommit": 5}}'),
    'branch start not a string': post('/api/models/alice/repo/branch/dev2', b'{"startingPoint": 5}'),
    'tag name missing': post('/api/models/alice/repo/tag/main', b'{}'),
    'lfs objects not a list': post('/alice/repo.git/info/lfs/objects/batch', b'{"operation": "upload", "objects": "x"}'),
    'lfs download operation': post('/alice/repo.git/info/lfs/objects/batch', b'{"operation": "download", "objects": []}'),
    'settings private not bool': head('PUT', '/api/models/alice/repo/settings', f'Authorization: Bearer {ALICE}', 'Content-Length: 17') + b'{"private": "no"}',
    'validate-yaml content not str': post('/api/validate-yaml', b'{"content": 5}'),
    'unknown route': head('GET', '/api/nothing/here'),
    'unknown repo type': head('GET', '/api/things/alice/repo'),
    'invalid repo id': head('GET', '/api/models/al..ice/repo'),
    'unknown revision': head('GET', '/api/models/alice/repo/revision/nope'),
    'revision with control chars': head('GET', '/alice/repo/resolve/%0D%0Abad/x.txt'),
    'path traversal in resolve': head('GET', '/alice/repo/resolve/main/..%2F..%2Fetc%2Fpasswd'),
    'range past the end': head('GET', '/alice/repo/resolve/main/.gitattributes', 'Range: bytes=999999-'),
    'range backwards': head('GET', '/alice/repo/resolve/main/.gitattributes', 'Range: bytes=10-2'),
    'unsupported method': head('PATCH', '/api/whoami-v2'),
    'made-up method': head('BREW', '/'),
    'bad request line': b'GARBAGE\r\n\r\n',
    'HTTP/2.0 request line': b'GET / HTTP/2.0\r\nHost: x\r\n\r\n',
    'request line too long': head('GET', '/' + 'a' * 70_000),
    'header line too long': head('GET', '/api/whoami-v2', 'X-Big: ' + 'a' * 70_000),
    'too many headers': head('GET', '/api/whoami-v2', *(f'X-H{i}: v' for i in range(200))),
    'Content-Length not a number': head('POST', '/api/validate-yaml', 'Content-Length: abc'),
    'Content-Length negative': head('POST', '/api/validate-yaml', 'Content-Length: -5'),
    'Content-Length and chunked': head('POST', '/api/validate-yaml', 'Content-Length: 2', 'Transfer-Encoding: chunked') + b'{}',
    'unknown Transfer-Encoding': head('POST', '/api/validate-yaml', 'Transfer-Encoding: gzip'),
    'chunk size not hex': head('POST', '/api/validate-yaml', 'Transfer-Encoding: chunked') + b'zz\r\n{}\r\n0\r\n\r\n',
    'lfs upload url unknown': head('PUT', '/lfs-upload/not-a-ticket', 'Content-Length: 0'),
}  # fmt: skip


@pytest.mark.parametrize('name', MALFORMED)
def test_malformed_requests_get_a_4xx_with_a_message(hub, name):
    status, headers, body = exchange(hub, MALFORMED[name])
    assert 400 <= status < 500, (status, body)
    reply = json.loads(body)
    assert reply['error'] and headers['x-error-message']
    for leak in (str(hub.store.root), 'Traceback', '/home/', '/tmp/'):
        assert leak not in body.decode() and leak not in headers['x-error-message']
