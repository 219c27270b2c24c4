"""The HTTP side of the local Hub server: the routes ``huggingface_hub`` calls, with the Hub's replies.

Routes (``<t>`` is ``model``/``dataset``/``space``; ``<prefix>`` is ``''``, ``datasets/`` or ``spaces/``):

    GET    /api/whoami-v2
    POST   /api/repos/create            DELETE /api/repos/delete         POST /api/validate-yaml
    GET    /api/<t>s/<repo>[/revision/<rev>]                             PUT  /api/<t>s/<repo>/settings
    GET    /api/<t>s/<repo>/tree/<rev>[/<path>]   POST /api/<t>s/<repo>/paths-info/<rev>
    GET    /api/<t>s/<repo>/refs                  GET  /api/<t>s/<repo>/commits/<rev>
    POST   /api/<t>s/<repo>/preupload/<rev>       POST /api/<t>s/<repo>/commit/<rev>  (NDJSON)
    POST|DELETE /api/<t>s/<repo>/branch/<name>    POST /api/<t>s/<repo>/tag/<rev>, DELETE .../tag/<name>
    POST   /<prefix><repo>.git/info/lfs/objects/batch   then   PUT /lfs-upload/<ticket>
    HEAD|GET /<prefix><repo>/resolve/<rev>/<path>       (X-Repo-Commit, ETag, X-Linked-*, Range)

Errors carry ``X-Error-Code``/``X-Error-Message`` so the client raises its usual typed exceptions
(``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``EntryNotFoundError``).

Whatever a client sends, the reply is a JSON ``{"error": message}`` with a 4xx status for a request the server
refuses (never a traceback or a local path; a 500 only for a bug, with the details in the log). Header values are
printable ASCII (file names go in RFC 6266 ``filename*``), bodies are read only once the caller may make the
request and only up to each route's cap (``body.py``), and sockets time out (``HubServer(timeout=...)``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from .body import BodyError, RequestBody
from .card import MAX_FRONT_MATTER, CardError, parse_card
from .names import SHA256, InvalidName, check_path, check_ref_name, check_repo_id
from .store import REPO_TYPES, Commit, FileEntry, Op, StagedBlob, Store, StoreError, wants_lfs

if TYPE_CHECKING:
    from .server import HubServer

logger = logging.getLogger(__name__)

_PREFIX_TO_TYPE = {'datasets': 'dataset', 'spaces': 'space'}
_URL_PREFIX = {'model': '', 'dataset': 'datasets/', 'space': 'spaces/'}

MAX_JSON_BODY = 8 << 20  # JSON and form bodies of the API routes (paths-info of thousands of paths fits)
MAX_INLINE_FILE = 10 << 20  # a regular file inside a commit: the Hub's limit; preupload sends bigger ones to LFS
MAX_COMMIT_LINE = MAX_INLINE_FILE * 4 // 3 + (64 << 10)  # one NDJSON line: the base64 file and its JSON
MAX_COMMIT_BODY = 1 << 30  # a commit's NDJSON, streamed line by line to objects/tmp, never held whole
MAX_COMMIT_OPS = 100_000
MAX_UPLOAD = 50 << 30  # one LFS object: the Hub's per-file limit
DRAIN_LIMIT = 1 << 20  # an unread body up to this size is read and dropped; a bigger one closes the connection
MAX_HEADER_MESSAGE = 2000
_HEADER_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
_TICKET = re.compile(r'(/lfs-upload/)[^/?#\s"]+')


def _header_value(value: str) -> str:
    """A header value as printable ASCII: control characters (CR, LF...) become spaces, other non-ASCII
    characters ``\\uXXXX`` escapes. ``send_header`` encodes Latin-1 and would pass CR/LF through."""
    return _HEADER_CONTROL.sub(' ', value).encode('ascii', 'backslashreplace').decode('ascii')


def _content_disposition(path: str) -> str:
    """RFC 6266: an ASCII ``filename`` for old clients and the exact UTF-8 name in ``filename*``."""
    name = path.rsplit('/', 1)[-1]
    fallback = ''.join(c if ' ' <= c <= '~' and c not in '"\\' else '_' for c in name)
    return f'inline; filename="{fallback}"; filename*=UTF-8\'\'{quote(name, safe="")}'


def _redact(text: str) -> str:
    """``text`` without upload tickets: a ticket is a secret URL (the PUT carries no token)."""
    return _TICKET.sub(r'\1<ticket>', text)


@functools.lru_cache(maxsize=256)
def _cached_card(store: Store, sha256: str, size: int) -> dict:
    """``cardData`` of a README blob (content-addressed, so cached by its sha256); ``{}`` when unparsable."""
    head = b''.join(store.read_range(sha256, 0, min(size, MAX_FRONT_MATTER + 1024)))
    try:
        return parse_card(head.decode('utf-8', 'replace')) or {}
    except CardError as e:  # a broken card must not break repo_info, as on the Hub (and stores of older servers)
        logger.warning('README %s: %s; serving it without cardData', sha256[:12], e)
        return {}


class _Reply(Exception):
    """Raised inside a route to answer with an error (the store's errors map onto this)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


def _range_number(digits: str) -> int:
    """A Range header's decimal number; past 18 digits, a number larger than any file (``int()`` of thousands of
    digits is slow, and refused past 4,300)."""
    digits = digits.lstrip('0') or '0'
    return int(digits) if len(digits) <= 18 else 1 << 63


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """``(start, end)`` of the one byte range a ``Range`` header asks of a file of ``size`` bytes (RFC 9110 section
    14); None when the whole file is the answer (200).

    Served: a single ``bytes=first-[last]`` or ``bytes=-suffix``, the unit in any case. Anything else (other units,
    several ranges, no number) is ignored, as RFC 9110 allows. A zero-length file has no byte to point at: a suffix
    range gets the whole (empty) file.

    Raises:
        _Reply: 416 with ``Content-Range: bytes */size`` when the range is not satisfiable: its first byte is at
            or past the end, ``last < first``, or the suffix is empty.
    """
    m = re.fullmatch(r'bytes=(\d*)-(\d*)', header.strip(), re.IGNORECASE)
    if not m or not (m.group(1) or m.group(2)):
        return None
    if m.group(1):
        first = _range_number(m.group(1))
        last = _range_number(m.group(2)) if m.group(2) else None
        if first < size and (last is None or last >= first):
            return first, size if last is None else min(last + 1, size)
    else:
        suffix = _range_number(m.group(2))
        if suffix > 0:
            return (max(size - suffix, 0), size) if size else None
    raise _Reply(
        416,
        f'Range {header.strip()[:100]!r} is not satisfiable for a file of {size} bytes',
        headers={'Content-Range': f'bytes */{size}'},
    )


def _field(body: dict, name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """``body[name]`` if it is a ``kind`` (absent or JSON null: ``default``); 400 naming the expected type otherwise."""
    value = body.get(name)
    if value is None:  # an explicit null means "not given", as absence does, never a None where a value is expected
        return default
    if not isinstance(value, kind):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        expected = ' or '.join(k.__name__ for k in kinds)
        raise _Reply(400, f'Expected {name!r} to be {expected} in the request body, got {type(value).__name__}')
    return value


def _private(body: dict, repo_type: str) -> bool | None:
    """Visibility asked by a create or settings body (``visibility`` wins over ``private``); None if neither.

    A ``protected`` Space (app public, files private, on the Hub) is private here: this server serves no apps.
    """
    visibility = _field(body, 'visibility', str)
    if visibility is not None:
        allowed = ('public', 'private', 'protected') if repo_type == 'space' else ('public', 'private')
        if visibility not in allowed:
            raise _Reply(400, f"Expected 'visibility' of a {repo_type} to be one of {allowed}, got {visibility!r}")
        return visibility != 'public'
    private = _field(body, 'private', (bool, int))
    return None if private is None else bool(private)


class HubHandler(BaseHTTPRequestHandler):
    """One connection. ``self.server.hub`` is the owning :class:`HubServer`."""

    protocol_version = 'HTTP/1.1'  # keep-alive, as the client expects; so every reply has a Content-Length
    server_version = 'hybrid-zoo-hub/1'
    _expect_continue = False
    body: RequestBody | None = None

    # ---- plumbing ----------------------------------------------------------------------------
    def setup(self) -> None:
        # a socket timeout: a client that stops mid-request (or idles on keep-alive) gives its thread back
        self.timeout = self.server.hub.timeout  # type: ignore[attr-defined]
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug('%s %s', self.address_string(), _redact(format % args))

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def base_url(self) -> str:
        return f'http://{self.headers.get("Host") or self.hub.address}'

    def parse_request(self) -> bool:
        self.body = None  # the previous request's body is not this one's
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        # "100 Continue" is sent when a route starts reading the body: a request refused before that (no token,
        # no access, too large) never makes the client send its body
        self._expect_continue = True
        return True

    def _send_continue(self) -> None:
        self.send_response_only(HTTPStatus.CONTINUE)
        self.end_headers()

    def _body_chunks(self, limit: int = MAX_UPLOAD, what: str = 'A request body') -> Iterator[bytes]:
        """The request body in pieces of at most 1 MiB; 413 (:class:`BodyError`) past ``limit`` bytes."""
        return self.body.chunks(limit, what)

    def _json_body(self) -> dict:
        raw = self.body.read_all(MAX_JSON_BODY, 'A JSON request body')
        if not raw.strip():
            return {}
        try:
            if 'application/x-www-form-urlencoded' in self.headers.get('Content-Type', ''):
                data = parse_qs(raw.decode('utf-8'), max_num_fields=100_000)
            else:
                data = json.loads(raw)
        except (ValueError, RecursionError) as e:
            raise _Reply(400, f'Request body is not valid JSON (or form data): {e}') from None
        if not isinstance(data, dict):
            raise _Reply(400, f'Expected a JSON object in the request body, got {type(data).__name__}')
        return data

    def send_header(self, keyword: str, value: str) -> None:
        super().send_header(keyword, _header_value(str(value)))

    def _send(self, status: int, body: bytes = b'', headers: dict[str, str] | None = None, ctype='application/json'):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        headers = {'X-Error-Message': message[:MAX_HEADER_MESSAGE], **(headers or {})}
        if code:
            headers['X-Error-Code'] = code
        self._json({'error': message}, status, headers)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._replied = True
        super().send_response(code, message)
        if self.body is not None and not self.body.drainable(DRAIN_LIMIT):
            self.send_header('Connection', 'close')  # the unread rest of the body is not worth reading

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (malformed request line, headers too long, unknown method), as JSON 4xx."""
        headers = {'Connection': 'close'}
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f'Unsupported method {self.command!r}'
            headers['Allow'] = 'GET, HEAD, POST, PUT, DELETE'
            message += f'; expected one of {headers["Allow"]}'
        elif code >= 500:  # 505 (HTTP version): still the client's request, not the server's failure
            code = HTTPStatus.BAD_REQUEST
        self.close_connection = True
        if self.request_version == 'HTTP/0.9':  # the request line was not understood: reply with a status line
            self.request_version = 'HTTP/1.0'
        self._error(code, message or HTTPStatus(code).description, headers=headers)

    def _dispatch(self) -> None:
        self._replied = False
        self.body = RequestBody(self.rfile, self.headers, self._send_continue if self._expect_continue else None)
        self._expect_continue = False
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        segments = [s for s in split.path.split('/') if s != '']  # still %-quoted: a revision may hold '/'
        try:
            try:
                self.hub.count_request(self.command, _redact(split.path))
                if self.body.framing_error is not None:
                    raise self.body.framing_error
                self.user, self.role = self._authenticate()
                self._route(segments)
            except _Reply as e:
                self._refuse(e.status, e.message, e.code, e.headers)
            except StoreError as e:
                self._refuse(e.status, e.message, e.code)
            except BodyError as e:
                self._refuse(e.status, e.message)
            except (InvalidName, CardError) as e:
                self._refuse(400, str(e))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception:  # a bug: answer 500 rather than drop the connection, and keep the details in the log
            logger.exception('%s %s failed', self.command, _redact(self.path))
            self.close_connection = True
            if not self._replied:
                self._error(500, 'Internal server error (the server log has the details)')
            return
        self._finish_body()

    def _refuse(self, status: int, message: str, code: str | None = None, headers: dict | None = None) -> None:
        if self._replied:  # a route failed mid-reply: the client sees a short body, and the connection ends
            logger.warning('%s %s failed after its reply started: %s', self.command, _redact(self.path), message)
            self.close_connection = True
        else:
            self._error(status, message, code, headers)

    def _finish_body(self) -> None:
        """Read what the route left of the body (a small rest), or close: the next request starts after it."""
        if self.body.done or self.close_connection:
            return
        try:
            if not (self.body.drainable(DRAIN_LIMIT) and self.body.discard(DRAIN_LIMIT)):
                self.close_connection = True
        except (ConnectionError, TimeoutError, BodyError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def _authenticate(self) -> tuple[str | None, str | None]:
        auth = self.headers.get('Authorization', '')
        if not auth:
            return None, None
        token = auth.removeprefix('Bearer ').strip()
        if token not in self.hub.tokens:
            # this exact message makes the client say "invalid token" instead of "repo not found"
            raise _Reply(401, 'Invalid credentials in Authorization header')
        return self.hub.tokens[token]

    def _owns(self, namespace: str) -> bool:
        """The caller is the namespace's user or a member of its org: sees its private repos."""
        return self.user is not None and (namespace == self.user or self.user in self.hub.orgs.get(namespace, ()))

    def _can_write(self, namespace: str) -> bool:
        return self.role == 'write' and self._owns(namespace)

    def _require_writer(self, action: str) -> None:
        """401/403 for a caller who cannot write anywhere: checked before the body of a write is read."""
        if self.user is None:
            raise _Reply(401, f'You must be authenticated to {action}')
        if self.role != 'write':
            raise _Reply(403, f'This token is read-only: to {action}, use a write token')

    def _flag(self, name: str) -> bool:
        return self.query.get(name) in ('1', 'true', 'True')

    # ---- routing -----------------------------------------------------------------------------
    def _route(self, seg: list[str]) -> None:
        method = self.command
        if seg[:1] == ['api']:
            if seg[1:] == ['whoami-v2']:
                return self._whoami()
            if seg[1:3] == ['repos', 'create'] and method == 'POST':
                return self._create_repo()
            if seg[1:3] == ['repos', 'delete'] and method == 'DELETE':
                return self._delete_repo()
            if seg[1:] == ['validate-yaml'] and method == 'POST':
                return self._validate_yaml()
            if len(seg) >= 4 and seg[1].endswith('s') and seg[1][:-1] in REPO_TYPES:
                return self._repo_api(seg[1][:-1], f'{unquote(seg[2])}/{unquote(seg[3])}', seg[4:])
        elif seg[:1] == ['lfs-upload'] and len(seg) == 2 and method == 'PUT':
            return self._lfs_put(seg[1])
        else:
            repo_type = _PREFIX_TO_TYPE.get(seg[0], 'model') if seg else 'model'
            rest = seg[1:] if seg and seg[0] in _PREFIX_TO_TYPE else seg
            if len(rest) == 6 and rest[1].endswith('.git') and rest[2:] == ['info', 'lfs', 'objects', 'batch']:
                return self._lfs_batch(repo_type, f'{unquote(rest[0])}/{unquote(rest[1][:-4])}')
            if len(rest) >= 5 and rest[2] == 'resolve' and method in ('GET', 'HEAD'):
                repo_id = f'{unquote(rest[0])}/{unquote(rest[1])}'
                return self._resolve(repo_type, repo_id, unquote(rest[3]), unquote('/'.join(rest[4:])))
        raise _Reply(404, f'No route for {method} {_redact(self.path)}')

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        method, action = self.command, rest[0] if rest else ''
        arg = unquote(rest[1]) if len(rest) > 1 else None
        if action.startswith('xet-'):
            raise _Reply(501, 'This local Hub server does not speak the Xet protocol: set HF_HUB_DISABLE_XET=1')
        writes = {'preupload', 'commit', 'branch', 'tag', 'settings'}
        self._repo(repo_type, repo_id, write=action in writes and method != 'GET')
        if action == 'settings' and method == 'PUT':
            return self._settings(repo_type, repo_id)
        if method == 'GET' and action in ('', 'revision'):
            return self._info(repo_type, repo_id, arg or 'main')
        if method == 'GET' and action == 'tree' and arg:
            return self._tree(repo_type, repo_id, arg, unquote('/'.join(rest[2:])))
        if method == 'POST' and action == 'paths-info' and arg:
            return self._paths_info(repo_type, repo_id, arg)
        if method == 'GET' and action == 'refs':
            return self._refs(repo_type, repo_id)
        if method == 'GET' and action == 'commits' and arg:
            return self._commits(repo_type, repo_id, arg)
        if method == 'POST' and action == 'preupload' and arg:
            return self._preupload(repo_type, repo_id, arg)
        if method == 'POST' and action == 'commit' and arg:
            return self._commit(repo_type, repo_id, arg)
        if action == 'branch' and arg and method in ('POST', 'DELETE'):
            return self._branch(repo_type, repo_id, unquote('/'.join(rest[1:])))
        if action == 'tag' and arg and method in ('POST', 'DELETE'):
            return self._tag(repo_type, repo_id, arg)
        raise _Reply(404, f'No route for {method} {_redact(self.path)}')

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> dict:
        """The repo's metadata if this caller may see it (and write to it); the Hub's 404/401/403 otherwise."""
        meta = self.hub.store.repo_meta(repo_type, repo_id)
        namespace = repo_id.split('/')[0]
        if meta is None or (meta['private'] and not self._owns(namespace)):
            # private repos are indistinguishable from missing ones for everybody but their owner
            raise _Reply(404, f'Repository not found: {repo_id}', 'RepoNotFound')
        if write and self.user is None:
            raise _Reply(401, 'You must be authenticated to write to a repo')
        if write and not self._can_write(namespace):
            raise _Reply(403, f'You do not have write access to {repo_type} {repo_id}')
        return meta

    def _commit_of(self, repo_type: str, repo_id: str, revision: str) -> Commit:
        commit_id = self.hub.store.resolve(repo_type, repo_id, revision)
        if commit_id is None:
            raise _Reply(404, f'Invalid rev id: {revision}', 'RevisionNotFound')
        return self.hub.store.read_commit(repo_type, repo_id, commit_id)

    # ---- account and repos -------------------------------------------------------------------
    def _whoami(self) -> None:
        if self.user is None:
            raise _Reply(401, 'Invalid credentials in Authorization header')
        orgs = [{'type': 'org', 'name': org} for org, members in self.hub.orgs.items() if self.user in members]
        role = self.role or 'read'
        self._json(
            {
                'type': 'user',
                'id': hashlib.sha1(self.user.encode()).hexdigest()[:24],
                'name': self.user,
                'fullname': self.user,
                'email': None,
                'emailVerified': False,
                'isPro': False,
                'orgs': orgs,
                'auth': {'type': 'access_token', 'accessToken': {'displayName': f'{role} token', 'role': role}},
            }
        )

    def _target(self, body: dict) -> tuple[str, str]:
        name = _field(body, 'name', str)
        org = _field(body, 'organization', str) or self.user
        repo_type = _field(body, 'type', str) or 'model'
        if repo_type not in REPO_TYPES or not name:
            raise _Reply(
                400, f"Expected a 'name' and a 'type' in {REPO_TYPES}, got name {name!r} and type {repo_type!r}"
            )
        return repo_type, check_repo_id(f'{org}/{name}')

    def _create_repo(self) -> None:
        self._require_writer('create a repo')
        body = self._json_body()
        repo_type, repo_id = self._target(body)
        url = f'{self.base_url}/{_URL_PREFIX[repo_type]}{repo_id}'
        if not self._can_write(repo_id.split('/')[0]):
            raise _Reply(
                403, f'You do not have the rights to create a {repo_type} under the namespace {repo_id.split("/")[0]}'
            )
        private = bool(_private(body, repo_type))
        try:
            self.hub.store.create_repo(repo_type, repo_id, private=private, author=self.user)
        except StoreError as e:
            if e.status != 409:
                raise
            # create_repo(exist_ok=True) reads the url from the 409 body
            message = 'You already created this repo'
            return self._json({'error': message, 'url': url}, 409, {'X-Error-Message': message})
        logger.info('created %s %s (private=%s)', repo_type, repo_id, private)
        self._json({'url': url, 'name': repo_id, 'id': repo_id})

    def _delete_repo(self) -> None:
        self._require_writer('delete a repo')
        repo_type, repo_id = self._target(self._json_body())
        self._repo(repo_type, repo_id, write=True)
        self.hub.drop_upload_tickets(repo_type, repo_id)
        self.hub.store.delete_repo(repo_type, repo_id)
        self._json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        private = _private(self._json_body(), repo_type)  # _repo_api checked write access first
        if private is not None:
            self.hub.store.set_private(repo_type, repo_id, bool(private))
        self._json({})

    def _validate_yaml(self) -> None:
        content = _field(self._json_body(), 'content', str, '')
        try:
            parse_card(content)
        except CardError as e:  # the Hub's 400: the client lists the messages of ``errors``
            message = f'Invalid YAML metadata in README.md: {e}'
            reply = {'error': message, 'errors': [{'message': message}], 'warnings': []}
            return self._json(reply, 400, {'X-Error-Message': message[:MAX_HEADER_MESSAGE]})
        self._json({'errors': [], 'warnings': []})

    # ---- read routes -------------------------------------------------------------------------
    def _card(self, commit: Commit) -> dict:
        readme = commit.files.get('README.md')
        return {} if readme is None else _cached_card(self.hub.store, readme.sha256, readme.size)

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        meta = self.hub.store.repo_meta(repo_type, repo_id)
        commit = self._commit_of(repo_type, repo_id, revision)
        card = self._card(commit)
        siblings = []
        for path, f in sorted(commit.files.items()):
            s: dict[str, Any] = {'rfilename': path}
            if self._flag('blobs'):
                s.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    s['lfs'] = {'sha256': f.sha256, 'size': f.size, 'pointerSize': f.pointer_size}
            siblings.append(s)
        tags = card.get('tags') or []
        info = {
            '_id': hashlib.sha1(f'{repo_type}/{repo_id}'.encode()).hexdigest()[:24],
            'id': repo_id,
            'author': repo_id.split('/')[0],
            'sha': commit.id,
            'lastModified': commit.date,
            'createdAt': meta['created_at'],
            'private': meta['private'],
            'gated': False,
            'disabled': False,
            'downloads': 0,
            'likes': 0,
            'tags': tags if isinstance(tags, list) else [tags],
            'cardData': card,
            'siblings': siblings,
        }
        if repo_type == 'model':
            info.update(library_name=card.get('library_name'), pipeline_tag=card.get('pipeline_tag'))
        self._json(info)

    def _last_commits(self, repo_type: str, repo_id: str, commit: Commit, paths: list[str]) -> dict[str, dict]:
        """For each path, the newest commit that changed it (``expand=true`` asks for it)."""
        out: dict[str, dict] = {}
        history = self.hub.store.history(repo_type, repo_id, commit.id)
        for path in paths:
            last = history[0]
            for older in history[1:]:
                if _subtree(older.files, path) != _subtree(last.files, path):
                    break
                last = older
            out[path] = {'id': last.id, 'title': last.title, 'date': last.date}
        return out

    def _entries(self, commit: Commit, paths: list[str]) -> list[dict]:
        entries = []
        for path in paths:
            if path in commit.files:
                entries.append(_file_json(path, commit.files[path]))
            elif _subtree(commit.files, path):
                entries.append({'type': 'directory', 'path': path, 'size': 0, 'oid': _tree_oid(commit.files, path)})
        return entries

    def _expand(self, repo_type: str, repo_id: str, commit: Commit, entries: list[dict]) -> list[dict]:
        last = self._last_commits(repo_type, repo_id, commit, [e['path'] for e in entries])
        for e in entries:
            e['lastCommit'] = last[e['path']]
            if e['type'] == 'file':
                e['securityFileStatus'] = {'status': 'safe', 'avScan': {'virusFound': False}, 'pickleImportScan': None}
        return entries

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        commit = self._commit_of(repo_type, repo_id, revision)
        path = path.strip('/')
        prefix = f'{path}/' if path else ''
        if path and path not in commit.files and not _subtree(commit.files, path):
            raise _Reply(404, f'Entry not found: {path}', 'EntryNotFound')
        if path in commit.files:
            names = [path]
        elif self._flag('recursive'):
            names = sorted({d for p in commit.files if p.startswith(prefix) for d in _parents(p, prefix)})
            names += sorted(p for p in commit.files if p.startswith(prefix))
        else:
            children = {prefix + p[len(prefix) :].split('/')[0] for p in commit.files if p.startswith(prefix)}
            names = sorted(children, key=lambda p: (p in commit.files, p))  # folders first, like the Hub
        entries = self._entries(commit, names)
        if self._flag('expand'):
            entries = self._expand(repo_type, repo_id, commit, entries)
        self._json(entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        body = self._json_body()
        paths = _field(body, 'paths', (list, str)) or []
        paths = [paths] if isinstance(paths, str) else paths
        if not all(isinstance(p, str) for p in paths):
            raise _Reply(400, "Expected 'paths' to be a list of strings in the request body")
        expand = body.get('expand')
        expand = expand[-1] if isinstance(expand, list) and expand else expand
        commit = self._commit_of(repo_type, repo_id, revision)
        entries = self._entries(commit, [p.strip('/') for p in paths])
        if expand in (True, 'True', 'true', '1'):
            entries = self._expand(repo_type, repo_id, commit, entries)
        self._json(entries)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        refs = self.hub.store.refs(repo_type, repo_id)

        def fmt(kind: str, prefix: str) -> list[dict]:
            return [{'name': n, 'ref': prefix + n, 'targetCommit': c} for n, c in sorted(refs[kind].items())]

        out = {'branches': fmt('heads', 'refs/heads/'), 'converts': [], 'tags': fmt('tags', 'refs/tags/')}
        if self._flag('include_prs'):
            out['pullRequests'] = fmt('prs', 'refs/pr/')
        self._json(out)

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        commit = self._commit_of(repo_type, repo_id, revision)
        history = self.hub.store.history(repo_type, repo_id, commit.id)
        self._json(
            [
                {'id': c.id, 'title': c.title, 'message': c.message, 'authors': [{'user': c.author}], 'date': c.date}
                for c in history
            ]
        )

    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        self._repo(repo_type, repo_id)
        commit = self._commit_of(repo_type, repo_id, revision)
        f = commit.files.get(path)
        if f is None:
            raise _Reply(404, f'Entry not found: {path} at {revision}', 'EntryNotFound')
        headers = {
            'X-Repo-Commit': commit.id,
            'ETag': f'"{f.sha256 if f.lfs else f.git_oid}"',
            'Accept-Ranges': 'bytes',
            'Content-Disposition': _content_disposition(path),
        }
        if f.lfs:
            headers.update({'X-Linked-Etag': f'"{f.sha256}"', 'X-Linked-Size': str(f.size)})
        start, end, status = 0, f.size, 200
        span = byte_range(self.headers.get('Range', ''), f.size)
        if span is not None:
            (start, end), status = span, 206
            headers['Content-Range'] = f'bytes {start}-{end - 1}/{f.size}'
        self.send_response(status)
        self.send_header('Content-Type', 'application/octet-stream')
        self.send_header('Content-Length', str(end - start))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == 'GET':
            for chunk in self.hub.store.read_range(f.sha256, start, end):
                self.wfile.write(chunk)

    # ---- write routes ------------------------------------------------------------------------
    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        items = _field(self._json_body(), 'files', list) or []
        commit = self._commit_of(repo_type, repo_id, revision)
        files = []
        for item in items:
            if not isinstance(item, dict):
                raise _Reply(400, f"Expected each of 'files' to be an object with a 'path', got {type(item).__name__}")
            path = check_path(_field(item, 'path', str) or '')
            size = _field(item, 'size', int, 0)
            if isinstance(size, bool) or size < 0:
                raise _Reply(400, f"Expected the 'size' of {path!r} to be a number of bytes, got {size!r}")
            try:
                sample = base64.b64decode(_field(item, 'sample', str) or '', validate=True)
            except ValueError as e:  # binascii.Error, or non-ASCII text
                raise _Reply(400, f"Expected 'sample' of {path!r} to be base64, got invalid data ({e})") from None
            existing = commit.files.get(path)
            files.append(
                {
                    'path': path,
                    'uploadMode': 'lfs' if wants_lfs(path, size, sample) else 'regular',
                    'shouldIgnore': False,
                    'oid': existing.upload_oid if existing else None,  # lets the client skip unchanged files
                }
            )
        self._json({'files': files, 'commitOid': commit.id})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        staged: dict[str, StagedBlob] = {}
        try:
            header, ops = self._commit_ops(repo_type, repo_id, staged)
            commit, pr_num = self.hub.store.commit(
                repo_type,
                repo_id,
                revision,
                ops,
                title=_field(header, 'summary', str) or 'Upload files',
                message=_field(header, 'description', str) or '',
                author=self.user or '',
                parent_commit=_field(header, 'parentCommit', str),
                create_pr=self._flag('create_pr'),
                staged=staged.values(),
            )
        finally:
            self.hub.store.discard(staged.values())  # what a refused commit staged; a no-op after success
        url = f'{self.base_url}/{_URL_PREFIX[repo_type]}{repo_id}'
        logger.info('%s %s: commit %s on %s (%d operations)', repo_type, repo_id, commit.id[:8], revision, len(ops))
        self._json(
            {
                'success': True,
                'commitOid': commit.id,
                'commitUrl': f'{url}/commit/{commit.id}',
                'hookOutput': '',
                'pullRequestUrl': f'{url}/discussions/{pr_num}' if pr_num else None,
            }
        )

    def _commit_ops(self, repo_type: str, repo_id: str, staged: dict[str, StagedBlob]) -> tuple[dict, list[Op]]:
        """Parse the NDJSON commit line by line; regular files go to ``staged`` (on disk), never all in memory."""
        header: dict = {}
        ops: list[Op] = []
        lines = self.body.lines(MAX_COMMIT_LINE, MAX_COMMIT_BODY, 'A commit (files over 10 MiB go through LFS)')
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if len(ops) >= MAX_COMMIT_OPS:
                raise _Reply(400, f'A commit is limited to {MAX_COMMIT_OPS} operations; split it into several')
            try:
                item = json.loads(line)
            except (ValueError, RecursionError) as e:
                raise _Reply(400, f'Line {n} of the commit is not JSON: {e}') from None
            value = item.get('value') if isinstance(item, dict) else None
            if not isinstance(value, dict):
                raise _Reply(
                    400, f"Expected line {n} of the commit to be {{'key': ..., 'value': {{...}}}}, got {line[:80]!r}"
                )
            key = item.get('key')
            if key == 'header':
                header = value
                continue
            if key not in ('file', 'lfsFile', 'deletedFile', 'deletedFolder'):
                raise _Reply(
                    400,
                    f'Unknown commit operation {key!r}: expected header, file, lfsFile, deletedFile or deletedFolder',
                )
            raw_path = _field(value, 'path', str) or ''
            path = check_path(raw_path.rstrip('/') if key == 'deletedFolder' else raw_path)
            if key == 'file':
                ops.append(Op('add', path, self._stage_file(path, value, staged).sha256, lfs=False))
            elif key == 'lfsFile':
                oid = _field(value, 'oid', str) or ''
                if not SHA256.match(oid):
                    raise _Reply(
                        400, f"Expected the 'oid' of LFS file {path!r} to be a sha256 (64 hex digits), got {oid!r}"
                    )
                if path == 'README.md' and self.hub.store.has_lfs(repo_type, repo_id, oid):
                    self._check_card(b''.join(self.hub.store.read_range(oid, 0, MAX_FRONT_MATTER + 1024)))
                ops.append(Op('add', path, oid, lfs=True))
            else:
                ops.append(Op('delete' if key == 'deletedFile' else 'delete_folder', path))
        return header, ops

    def _stage_file(self, path: str, value: dict, staged: dict[str, StagedBlob]) -> StagedBlob:
        encoding = _field(value, 'encoding', str) or 'base64'
        if encoding != 'base64':
            raise _Reply(400, f'Unsupported encoding {encoding!r} for {path!r}: expected base64')
        try:
            content = _field(value, 'content', str)
            if content is None:
                raise _Reply(400, f"Expected the 'content' of {path!r} (base64) in the commit, got none")
            data = base64.b64decode(content, validate=True)
        except ValueError as e:  # binascii.Error, or non-ASCII text
            raise _Reply(400, f'The content of {path!r} is not valid base64 ({e})') from None
        if len(data) > MAX_INLINE_FILE:
            raise _Reply(
                413,
                f'{path!r} is {len(data)} bytes: regular files are limited to {MAX_INLINE_FILE} bytes; upload it through LFS',
            )
        if path == 'README.md':
            self._check_card(data)
        blob = staged.get(hashlib.sha256(data).hexdigest())
        if blob is None:
            blob = self.hub.store.stage_bytes(data)
            staged[blob.sha256] = blob
        return blob

    @staticmethod
    def _check_card(readme: bytes) -> None:
        """Refuse a README whose metadata could not be served (the Hub refuses invalid metadata too)."""
        try:
            parse_card(readme.decode('utf-8', 'replace'))
        except CardError as e:
            raise _Reply(400, f'Invalid YAML metadata in README.md: {e}') from None

    def _branch(self, repo_type: str, repo_id: str, name: str) -> None:
        if self.command == 'DELETE':
            self.hub.store.set_ref(repo_type, repo_id, 'heads', name, None)
        else:
            check_ref_name(name, 'branch')  # the name first, as git does: 400 whatever the starting point
            starting_point = _field(self._json_body(), 'startingPoint', str) or 'main'
            start = self._commit_of(repo_type, repo_id, starting_point)
            self.hub.store.set_ref(repo_type, repo_id, 'heads', name, start.id)
        self._json({})

    def _tag(self, repo_type: str, repo_id: str, arg: str) -> None:
        if self.command == 'DELETE':
            self.hub.store.set_ref(repo_type, repo_id, 'tags', arg, None)
        else:
            tag = _field(self._json_body(), 'tag', str)
            if not tag:
                raise _Reply(400, "Expected a 'tag' name in the request body")
            check_ref_name(tag, 'tag')
            commit = self._commit_of(repo_type, repo_id, arg)
            self.hub.store.set_ref(repo_type, repo_id, 'tags', tag, commit.id)
        self._json({})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        # only uploads are served here, so write access is checked before the body is read
        self._repo(repo_type, repo_id, write=True)
        body = self._json_body()
        if body.get('operation') != 'upload':
            raise _Reply(
                400, f"Expected operation 'upload' (downloads go through /resolve), got {body.get('operation')!r}"
            )
        objects = []
        for obj in _field(body, 'objects', list) or []:
            obj = obj if isinstance(obj, dict) else {}
            oid, size = obj.get('oid'), obj.get('size')
            if (
                not isinstance(oid, str)
                or not SHA256.match(oid)
                or type(size) is not int
                or not 0 <= size <= MAX_UPLOAD
            ):
                error = {'code': 422, 'message': f'Expected a sha256 oid and a size of 0 to {MAX_UPLOAD} bytes'}
                objects.append({'oid': str(oid), 'size': size if type(size) is int else 0, 'error': error})
            elif self.hub.store.has_lfs(repo_type, repo_id, oid):
                objects.append({'oid': oid, 'size': size})  # no "actions": already uploaded here
            else:
                ticket = self.hub.issue_upload_ticket(repo_type, repo_id, oid, size)
                href = f'{self.base_url}/lfs-upload/{ticket}'
                upload = {'href': href, 'expires_in': int(self.hub.ticket_ttl)}
                objects.append({'oid': oid, 'size': size, 'authenticated': True, 'actions': {'upload': upload}})
        self._json({'transfer': 'basic', 'objects': objects, 'hash_algo': 'sha256'})

    def _lfs_put(self, ticket: str) -> None:
        target = self.hub.upload_target(ticket)
        if target is None:
            raise _Reply(404, 'Unknown or expired upload URL: request a new one from the LFS batch API')
        repo_type, repo_id, oid, size = target
        if self.body.length is not None and self.body.length != size:  # refused before a byte is read
            raise _Reply(
                400, f'LFS object {oid} was announced as {size} bytes; this upload declares {self.body.length}'
            )
        # a chunked upload is refused at the first chunk (or byte) past the announced size
        chunks = self._body_chunks(size, f'The upload of LFS object {oid}')
        self.hub.store.put_lfs(repo_type, repo_id, chunks, oid, size)
        self.hub.close_upload_ticket(ticket)  # reusable until it succeeds: the client retries a broken PUT
        self._send(200)


def _file_json(path: str, f: FileEntry) -> dict:
    d = {'type': 'file', 'path': path, 'size': f.size, 'oid': f.git_oid}
    if f.lfs:
        d['lfs'] = {'oid': f.sha256, 'size': f.size, 'pointerSize': f.pointer_size}
    return d


def _subtree(files: dict[str, FileEntry], path: str) -> dict[str, str]:
    prefix = path.rstrip('/') + '/'
    return {p: f.git_oid for p, f in files.items() if p.startswith(prefix) or p == path}


def _tree_oid(files: dict[str, FileEntry], path: str) -> str:
    return hashlib.sha1(json.dumps(sorted(_subtree(files, path).items())).encode()).hexdigest()


def _parents(path: str, prefix: str) -> list[str]:
    """Folders between ``prefix`` and ``path`` (``a/b/c.txt`` -> ``a``, ``a/b``)."""
    parts = path[len(prefix) :].split('/')[:-1]
    return [prefix + '/'.join(parts[: i + 1]) for i in range(len(parts))]
