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
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from hybrid_zoo.hub.server.store import (
    REPO_TYPES,
    Commit,
    FileEntry,
    Op,
    StoreError,
    check_path,
    check_repo_id,
    wants_lfs,
)

if TYPE_CHECKING:
    from hybrid_zoo.hub.server.server import HubServer

logger = logging.getLogger(__name__)

_PREFIX_TO_TYPE = {'datasets': 'dataset', 'spaces': 'space'}
_URL_PREFIX = {'model': '', 'dataset': 'datasets/', 'space': 'spaces/'}
_FRONT_MATTER = re.compile(r'\A---\s*\n(.*?)\n---\s*(?:\n|\Z)', re.S)


def _parse_card(text: str) -> dict | None:
    """YAML metadata of a README, or None. PyYAML is optional: without it ``cardData`` stays empty."""
    m = _FRONT_MATTER.match(text)
    if not m:
        return None
    try:
        import yaml
    except ImportError:
        return None
    data = yaml.safe_load(m.group(1))
    if data is not None and not isinstance(data, dict):
        raise ValueError('the YAML metadata must be a mapping')
    return data


class _Reply(Exception):
    """Raised inside a route to answer with an error (the store's errors map onto this)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class HubHandler(BaseHTTPRequestHandler):
    """One connection. ``self.server.hub`` is the owning :class:`HubServer`."""

    protocol_version = 'HTTP/1.1'  # keep-alive, as the client expects; so every reply has a Content-Length
    server_version = 'hybrid-zoo-hub/1'

    # ---- plumbing ----------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug('%s %s', self.address_string(), format % args)

    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    @property
    def base_url(self) -> str:
        return f'http://{self.headers.get("Host") or self.hub.address}'

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body, Content-Length or chunked (the client's LFS PUT may stream a file object)."""
        if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ConnectionError('connection closed inside a chunked body')
                size = int(line.split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b'\r\n', b'\n', b''):
                        pass  # trailers
                    return
                yield from _read_exact(self.rfile, size)
                self.rfile.readline(1024)  # CRLF after each chunk
        else:
            yield from _read_exact(self.rfile, int(self.headers.get('Content-Length') or 0))

    def _body(self) -> bytes:
        if self._body_read:
            return b''
        self._body_read = True
        return b''.join(self._body_chunks())

    def _json_body(self) -> dict:
        raw = self._body()
        if not raw:
            return {}
        ctype = self.headers.get('Content-Type', '')
        if 'application/x-www-form-urlencoded' in ctype:
            return parse_qs(raw.decode())
        try:
            return json.loads(raw)
        except ValueError as e:
            raise _Reply(400, f'Request body is not JSON: {e}') from None

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

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {'X-Error-Message': message.replace('\n', ' ')}
        if code:
            headers['X-Error-Code'] = code
        self._json({'error': message}, status, headers)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._replied = True
        super().send_response(code, message)

    def _dispatch(self) -> None:
        self._body_read = self._replied = False
        split = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        segments = [s for s in split.path.split('/') if s != '']  # still %-quoted: a revision may hold '/'
        try:
            self.hub.count_request(self.command, split.path)
            self.user, self.role = self._authenticate()
            self._route(segments)
        except StoreError as e:
            self._error(e.status, e.message, e.code)
        except _Reply as e:
            self._error(e.status, e.message, e.code)
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            return
        except Exception as e:  # a bug or a malformed request: answer 500 rather than drop the connection
            logger.exception('%s %s failed', self.command, self.path)
            self.close_connection = True
            if not self._replied:
                self._error(500, f'Internal error: {type(e).__name__}: {e}')
            return
        # read whatever the route left unread, or the next request on this connection would parse it
        if not self._body_read:
            try:
                self._body()
            except ConnectionError:
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
                return self._repo_api(seg[1][:-1], f'{seg[2]}/{seg[3]}', seg[4:])
        elif seg[:1] == ['lfs-upload'] and len(seg) == 2 and method == 'PUT':
            return self._lfs_put(seg[1])
        else:
            repo_type = _PREFIX_TO_TYPE.get(seg[0], 'model') if seg else 'model'
            rest = seg[1:] if seg and seg[0] in _PREFIX_TO_TYPE else seg
            if len(rest) == 6 and rest[1].endswith('.git') and rest[2:] == ['info', 'lfs', 'objects', 'batch']:
                return self._lfs_batch(repo_type, f'{rest[0]}/{rest[1][:-4]}')
            if len(rest) >= 5 and rest[2] == 'resolve' and method in ('GET', 'HEAD'):
                return self._resolve(repo_type, f'{rest[0]}/{rest[1]}', unquote(rest[3]), unquote('/'.join(rest[4:])))
        raise _Reply(404, f'No route for {method} {self.path}')

    def _repo_api(self, repo_type: str, repo_id: str, rest: list[str]) -> None:
        method, action = self.command, rest[0] if rest else ''
        arg = unquote(rest[1]) if len(rest) > 1 else None
        if action == 'settings' and method == 'PUT':
            return self._settings(repo_type, repo_id)
        if action.startswith('xet-'):
            raise _Reply(501, 'This local Hub server does not speak the Xet protocol: set HF_HUB_DISABLE_XET=1')
        writes = {'preupload', 'commit', 'branch', 'tag'}
        self._repo(repo_type, repo_id, write=action in writes and method != 'GET')
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
        raise _Reply(404, f'No route for {method} {self.path}')

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
        name, org = body.get('name'), body.get('organization') or self.user
        repo_type = body.get('type') or 'model'
        if repo_type not in REPO_TYPES or not isinstance(name, str):
            raise _Reply(400, f"Expected a 'name' and a type in {REPO_TYPES}, got {body!r}")
        repo_id = f'{org}/{name}'
        check_repo_id(repo_id)
        return repo_type, repo_id

    def _create_repo(self) -> None:
        body = self._json_body()
        if self.user is None:
            raise _Reply(401, 'You must be authenticated to create a repo')
        repo_type, repo_id = self._target(body)
        url = f'{self.base_url}/{_URL_PREFIX[repo_type]}{repo_id}'
        if not self._can_write(repo_id.split('/')[0]):
            raise _Reply(
                403, f'You do not have the rights to create a {repo_type} under the namespace {repo_id.split("/")[0]}'
            )
        private = body.get('visibility', 'private' if body.get('private') else 'public') != 'public'
        try:
            self.hub.store.create_repo(repo_type, repo_id, private=bool(private), author=self.user)
        except StoreError as e:
            if e.status != 409:
                raise
            # create_repo(exist_ok=True) reads the url from the 409 body
            return self._json({'error': 'You already created this repo', 'url': url}, 409)
        logger.info('created %s %s (private=%s)', repo_type, repo_id, private)
        self._json({'url': url, 'name': repo_id, 'id': repo_id})

    def _delete_repo(self) -> None:
        repo_type, repo_id = self._target(self._json_body())
        self._repo(repo_type, repo_id, write=True)
        self.hub.store.delete_repo(repo_type, repo_id)
        self._json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        body = self._json_body()
        self._repo(repo_type, repo_id, write=True)
        private = body.get('private')
        if 'visibility' in body:
            private = body['visibility'] != 'public'
        if private is not None:
            self.hub.store.set_private(repo_type, repo_id, bool(private))
        self._json({})

    def _validate_yaml(self) -> None:
        content = self._json_body().get('content', '')
        try:
            _parse_card(content)
        except Exception as e:  # any YAML error is the user's, reported like the Hub's 400
            raise _Reply(400, f'Invalid YAML metadata in README.md: {e}') from None
        self._json({'errors': [], 'warnings': []})

    # ---- read routes -------------------------------------------------------------------------
    def _card(self, commit: Commit) -> dict:
        readme = commit.files.get('README.md')
        if readme is None:
            return {}
        try:
            return _parse_card(self.hub.store.read_bytes(readme.sha256).decode('utf-8', 'replace')) or {}
        except Exception:  # a broken card must not break repo_info, as on the Hub
            return {}

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
        paths = body.get('paths') or []
        paths = [paths] if isinstance(paths, str) else paths
        expand = body.get('expand')
        expand = expand[-1] if isinstance(expand, list) else expand
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
            'Content-Disposition': f'inline; filename="{Path(path).name}"',
        }
        if f.lfs:
            headers.update({'X-Linked-Etag': f'"{f.sha256}"', 'X-Linked-Size': str(f.size)})
        start, end, status = 0, f.size, 200
        rng = re.fullmatch(r'bytes=(\d*)-(\d*)', self.headers.get('Range', '').strip())
        if rng and (rng.group(1) or rng.group(2)):
            if rng.group(1):
                start = int(rng.group(1))
                end = min(int(rng.group(2)) + 1, f.size) if rng.group(2) else f.size
            else:  # suffix range: the last N bytes
                start = max(f.size - int(rng.group(2)), 0)
            if start >= f.size and f.size > 0:
                raise _Reply(416, f'Range not satisfiable for a file of {f.size} bytes')
            status = 206
            headers['Content-Range'] = f'bytes {start}-{max(end - 1, start)}/{f.size}'
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
        body = self._json_body()
        commit = self._commit_of(repo_type, repo_id, revision)
        files = []
        for item in body.get('files', []):
            path = check_path(item['path'])
            sample = base64.b64decode(item.get('sample') or '')
            existing = commit.files.get(path)
            files.append(
                {
                    'path': path,
                    'uploadMode': 'lfs' if wants_lfs(path, int(item.get('size', 0)), sample) else 'regular',
                    'shouldIgnore': False,
                    'oid': existing.upload_oid if existing else None,  # lets the client skip unchanged files
                }
            )
        self._json({'files': files, 'commitOid': commit.id})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        header: dict = {}
        ops: list[Op] = []
        for line in self._body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item.get('key'), item.get('value', {})
            if key == 'header':
                header = value
            elif key == 'file':
                if value.get('encoding', 'base64') != 'base64':
                    raise _Reply(400, f'Unsupported encoding {value.get("encoding")!r}')
                sha256 = self.hub.store.put_bytes(base64.b64decode(value['content']))
                ops.append(Op('add', check_path(value['path']), sha256, lfs=False))
            elif key == 'lfsFile':
                ops.append(Op('add', check_path(value['path']), value['oid'], lfs=True))
            elif key in ('deletedFile', 'deletedFolder'):
                ops.append(
                    Op('delete' if key == 'deletedFile' else 'delete_folder', check_path(value['path'].rstrip('/')))
                )
            else:
                raise _Reply(400, f'Unknown commit operation {key!r}')
        title = header.get('summary') or 'Upload files'
        create_pr = self._flag('create_pr')
        commit, pr_num = self.hub.store.commit(
            repo_type,
            repo_id,
            revision,
            ops,
            title=title,
            message=header.get('description') or '',
            author=self.user or '',
            parent_commit=header.get('parentCommit'),
            create_pr=create_pr,
        )
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

    def _branch(self, repo_type: str, repo_id: str, name: str) -> None:
        body = self._json_body()
        if self.command == 'DELETE':
            self.hub.store.set_ref(repo_type, repo_id, 'heads', name, None)
        else:
            start = self._commit_of(repo_type, repo_id, body.get('startingPoint') or 'main')
            self.hub.store.set_ref(repo_type, repo_id, 'heads', name, start.id)
        self._json({})

    def _tag(self, repo_type: str, repo_id: str, arg: str) -> None:
        body = self._json_body()
        if self.command == 'DELETE':
            self.hub.store.set_ref(repo_type, repo_id, 'tags', arg, None)
        else:
            if not isinstance(body.get('tag'), str):
                raise _Reply(400, "Expected a 'tag' name in the body")
            commit = self._commit_of(repo_type, repo_id, arg)
            self.hub.store.set_ref(repo_type, repo_id, 'tags', body['tag'], commit.id)
        self._json({})

    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        body = self._json_body()
        self._repo(repo_type, repo_id, write=body.get('operation') == 'upload')
        if body.get('operation') != 'upload':
            raise _Reply(400, 'Only LFS uploads are served here: downloads go through /resolve')
        objects = []
        for obj in body.get('objects', []):
            oid, size = str(obj.get('oid', '')), obj.get('size')
            if not re.fullmatch(r'[0-9a-f]{64}', oid) or not isinstance(size, int) or size < 0:
                objects.append(
                    {'oid': oid, 'size': size or 0, 'error': {'code': 422, 'message': 'Invalid oid or size'}}
                )
            elif self.hub.store.has_lfs(repo_type, repo_id, oid):
                objects.append({'oid': oid, 'size': size})  # no "actions": already uploaded here
            else:
                ticket = self.hub.issue_upload_ticket(repo_type, repo_id, oid, size)
                href = f'{self.base_url}/lfs-upload/{ticket}'
                objects.append(
                    {
                        'oid': oid,
                        'size': size,
                        'authenticated': True,
                        'actions': {'upload': {'href': href, 'expires_in': 3600}},
                    }
                )
        self._json({'transfer': 'basic', 'objects': objects, 'hash_algo': 'sha256'})

    def _lfs_put(self, ticket: str) -> None:
        target = self.hub.upload_target(ticket)
        if target is None:
            raise _Reply(404, 'Unknown or expired upload URL: request a new one from the LFS batch API')
        repo_type, repo_id, oid, size = target
        self._body_read = True
        self.hub.store.put_stream(self._body_chunks(), oid, size)
        self.hub.store.link_lfs(repo_type, repo_id, oid)
        self.hub.close_upload_ticket(ticket)  # reusable until it succeeds: the client retries a broken PUT
        self._send(200)


def _read_exact(stream, size: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = stream.read(min(chunk_size, left))
        if not chunk:
            raise ConnectionError(f'connection closed with {left} of {size} body bytes unread')
        left -= len(chunk)
        yield chunk


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
