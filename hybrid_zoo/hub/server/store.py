"""On-disk storage of the local Hub server: content-addressed blobs, immutable commits, atomic refs.

Layout under ``data_dir``::

    objects/<sha256[:2]>/<sha256>          file contents, regular and LFS alike, stored once
    repos/<type>s/<ns>/<name>/repo.json    {"private": bool, "created_at": str}
    repos/<type>s/<ns>/<name>/refs.json    {"heads": {branch: commit}, "tags": {...}, "prs": {...}}
    repos/<type>s/<ns>/<name>/commits/<commit>.json   one immutable file per commit
    repos/<type>s/<ns>/<name>/lfs/<sha256>             LFS objects uploaded to this repo
    objects/tmp/                           uploads in progress and blobs of commits not yet accepted

The one server that uses the folder holds an ``flock`` on the folder itself, through a descriptor it keeps open
until it stops: the kernel drops the lock when that process ends, however it ends, and no file that anybody
deletes can release it (a lock *file* can be deleted under a running server, and the next server would then
lock a new file of the same name and overwrite the first one's refs).

A commit becomes visible only when ``refs.json`` is replaced (``os.replace`` is atomic), after its
blobs and its commit file are on disk: a crash or a dropped upload leaves unreferenced files, never a
half-written revision. A blob enters ``objects/`` only once verified: an upload once its size and sha256
match, a commit's files once the commit is accepted (they wait in ``objects/tmp`` until then, and a
restart clears that folder). LFS objects are linked per repo because a blob in the shared store proves
nothing about who may reference it: a repo may commit an LFS pointer only to content uploaded to it.

Like every module of the server, this one imports only the standard library (``card.py`` adds PyYAML) and
its sibling modules, so the server can run without the model package's torch and timm
(``hybrid-zoo hub-server``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .names import SHA1, SHA256, InvalidName, check_path, check_ref_name, check_repo_id

logger = logging.getLogger(__name__)

REPO_TYPES = ('model', 'dataset', 'space')
# The Hub decides "lfs" from .gitattributes and a content sample; these are its default patterns
# (https://huggingface.co/docs/hub/repositories-getting-started#requirements) plus images.
LFS_SUFFIXES = (
    '.safetensors',
    '.bin',
    '.pt',
    '.pth',
    '.ckpt',
    '.onnx',
    '.h5',
    '.msgpack',
    '.npy',
    '.npz',
    '.pkl',
    '.parquet',
    '.arrow',
    '.zip',
    '.gz',
    '.tar',
    '.zst',
    '.png',
    '.jpg',
    '.jpeg',
    '.webp',
)
LFS_MIN_SIZE = 10 * 1024 * 1024
DEFAULT_BRANCH = 'main'
GITATTRIBUTES = ''.join(f'*{suffix} filter=lfs diff=lfs merge=lfs -text\n' for suffix in LFS_SUFFIXES)


class StoreError(Exception):
    """A request the store refuses; ``status`` and ``code`` map onto the Hub's HTTP error replies."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class DataDirError(Exception):
    """The data folder cannot be used: not a folder, not writable, or in use by another server."""


def write_json_atomic(path: Path, data: object) -> None:
    """Readers see the old file or the new one, never half of one.

    The same protocol as ``hybrid_zoo.atomic``, repeated here because importing any ``hybrid_zoo`` module
    imports the model package (torch and timm), which the server does not need.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'w') as f:
            json.dump(data, f, indent=2)
            f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def now_iso() -> str:
    """UTC time in the Hub's format (``2024-01-31T12:00:00.000Z``)."""
    return datetime.now(timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3] + 'Z'


def git_blob_oid(data: bytes) -> str:
    """git's object id of a blob: what the Hub reports as a regular file's ``oid`` and ETag."""
    return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f'version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n'.encode()


def wants_lfs(path: str, size: int, sample: bytes = b'') -> bool:
    """Upload mode the Hub would pick: LFS for weight/data/image suffixes, big files and binary content."""
    return path.lower().endswith(LFS_SUFFIXES) or size >= LFS_MIN_SIZE or b'\0' in sample


def _gone(repo_id: str) -> StoreError:
    return StoreError(404, f'Repository not found: {repo_id}', 'RepoNotFound')


def file_folder_clash(files: Iterable[str], touched: Iterable[str]) -> str | None:
    """A path of ``touched`` that is also a folder of ``files`` (``a`` and ``a/b``), or None.

    git keeps a tree per folder, so one name cannot be both; a snapshot of such a revision could not be written
    to a disk either. Only the paths a commit touches are checked, so an older store's trees stay committable.
    """
    files = set(files)
    folders = {p.rsplit('/', i)[0] for p in files for i in range(1, p.count('/') + 1)}
    for path in (p for p in touched if p in files):  # a path added, then deleted in the same commit, is gone
        if path in folders:
            return path
        for parent in (path.rsplit('/', i)[0] for i in range(1, path.count('/') + 1)):
            if parent in files:
                return parent
    return None


def _checked(check, *args) -> str:
    try:
        return check(*args)
    except InvalidName as e:
        raise StoreError(400, str(e)) from None


@dataclass(frozen=True)
class FileEntry:
    """One file of a revision. ``git_oid`` is the git blob id (of the LFS pointer for LFS files)."""

    sha256: str
    size: int
    git_oid: str
    lfs: bool

    @property
    def upload_oid(self) -> str:
        """The oid the client compares in preupload: sha256 for LFS files, git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class Commit:
    id: str
    parents: tuple[str, ...]
    title: str
    message: str
    author: str
    date: str
    files: dict[str, FileEntry]

    def to_json(self) -> dict:
        files = {p: [f.sha256, f.size, f.git_oid, f.lfs] for p, f in sorted(self.files.items())}
        return dict(
            id=self.id,
            parents=list(self.parents),
            title=self.title,
            message=self.message,
            author=self.author,
            date=self.date,
            files=files,
        )

    @classmethod
    def from_json(cls, d: dict) -> Commit:
        files = {p: FileEntry(*v) for p, v in d['files'].items()}
        return cls(d['id'], tuple(d['parents']), d['title'], d['message'], d['author'], d['date'], files)


@dataclass(frozen=True)
class Op:
    """One line of a commit request: ``add`` (``sha256`` names a blob already in the store) or ``delete``."""

    kind: str  # 'add' | 'delete' | 'delete_folder'
    path: str
    sha256: str = ''
    lfs: bool = False


@dataclass
class StagedBlob:
    """Content of a commit waiting in ``objects/tmp`` until the commit is accepted (``tmp`` None: stored already)."""

    sha256: str
    size: int
    git_oid: str
    tmp: Path | None = field(default=None, compare=False)


class Store:
    """Repos, revisions and blobs of one server. Thread-safe; one server process per ``data_dir``, enforced.

    Args:
        data_dir: The store's folder; created if missing.

    Raises:
        DataDirError: ``data_dir`` is not a folder that can be written, or another server holds its lock
            (two servers on one folder would each acknowledge commits and then overwrite each other's refs).
    """

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir)
        self._lock = threading.RLock()  # serialises ref updates; blobs and commit files are immutable
        try:
            (self.root / 'objects' / 'tmp').mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root / 'objects' / 'tmp'):  # writable, not only there
                pass
            # not inherited by child processes (os.open's default), so only this process ever holds it
            self._root_fd: int | None = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise DataDirError(
                f'--data-dir {str(self.root)!r} must be a folder this user can write: {e.strerror}'
            ) from None
        try:
            fcntl.flock(self._root_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise DataDirError(
                f'--data-dir {str(self.root)!r} is in use by another hub server (it holds a lock on the folder '
                'until it stops); stop that one or choose another folder'
            ) from None
        self._clean_debris()

    def close(self) -> None:
        """Release the data folder (another server may then open it)."""
        fd, self._root_fd = self._root_fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open folder releases the flock

    def _clean_debris(self) -> None:
        """Remove what a killed server left: partial uploads, staged blobs, half-created or half-deleted repos."""
        for tmp in (self.root / 'objects' / 'tmp').iterdir():
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        for repo in self.root.glob('repos/*/*/*'):
            if not (repo / 'repo.json').is_file():
                logger.info('removing %s: a repo whose create or delete was interrupted', repo)
                shutil.rmtree(repo, ignore_errors=True)
                continue
            for folder in (repo, repo / 'commits'):  # temp files of interrupted atomic writes
                for debris in folder.glob('.*'):
                    debris.unlink(missing_ok=True)

    # ---- blobs -------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / 'objects' / sha256[:2] / sha256

    def has_blob(self, sha256: str) -> bool:
        return bool(SHA256.match(sha256)) and self.blob_path(sha256).is_file()

    def put_bytes(self, data: bytes) -> str:
        """Store ``data`` at once (the server's own content, such as the default ``.gitattributes``)."""
        blob = self.stage_bytes(data)
        self._publish(blob)
        return blob.sha256

    def stage_bytes(self, data: bytes) -> StagedBlob:
        """Write a commit's file to ``objects/tmp``; it enters the store only if :meth:`commit` accepts the commit."""
        sha256 = hashlib.sha256(data).hexdigest()
        blob = StagedBlob(sha256, len(data), git_blob_oid(data))
        if not self.has_blob(sha256):
            fd, tmp = tempfile.mkstemp(dir=self.root / 'objects' / 'tmp')
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            blob.tmp = Path(tmp)
        return blob

    def discard(self, blobs: Iterable[StagedBlob]) -> None:
        """Drop staged blobs that no commit took (a refused commit stores nothing)."""
        for blob in blobs:
            if blob.tmp is not None:
                blob.tmp.unlink(missing_ok=True)
                blob.tmp = None

    def _publish(self, blob: StagedBlob) -> None:
        if blob.tmp is not None:
            self.blob_path(blob.sha256).parent.mkdir(exist_ok=True)
            os.replace(blob.tmp, self.blob_path(blob.sha256))
            blob.tmp = None

    def put_lfs(self, repo_type: str, repo_id: str, chunks: Iterable[bytes], sha256: str, size: int) -> None:
        """Store an LFS upload to a repo; nothing is kept unless it is exactly ``size`` bytes hashing to ``sha256``.

        Reading stops at the first byte past ``size``; the repo must still exist when the upload completes.
        """
        fd, tmp = tempfile.mkstemp(dir=self.root / 'objects' / 'tmp')
        digest, n = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, 'wb') as f:
                for chunk in chunks:
                    n += len(chunk)
                    if n > size:
                        raise StoreError(
                            400, f'Upload is larger than the {size} bytes declared for LFS object {sha256}'
                        )
                    digest.update(chunk)
                    f.write(chunk)
            if n != size or digest.hexdigest() != sha256:
                raise StoreError(
                    400,
                    f'Uploaded content does not match: expected sha256 {sha256} and {size} bytes, '
                    f'got sha256 {digest.hexdigest()} and {n} bytes',
                )
            with self._lock:
                if self.repo_meta(repo_type, repo_id) is None:
                    raise _gone(repo_id)
                self._publish(StagedBlob(sha256, size, '', Path(tmp)))
                self._link_lfs(repo_type, repo_id, sha256)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def read_range(self, sha256: str, start: int, end: int, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        with open(self.blob_path(sha256), 'rb') as f:
            f.seek(start)
            left = end - start
            while left > 0:
                chunk = f.read(min(chunk_size, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    def read_bytes(self, sha256: str) -> bytes:
        return self.blob_path(sha256).read_bytes()

    def entry_for(self, sha256: str, lfs: bool) -> FileEntry:
        size = self.blob_path(sha256).stat().st_size
        git_oid = git_blob_oid(lfs_pointer(sha256, size) if lfs else self.read_bytes(sha256))
        return FileEntry(sha256, size, git_oid, lfs)

    # ---- repos -------------------------------------------------------------------------------
    def _dir(self, repo_type: str, repo_id: str) -> Path:
        _checked(check_repo_id, repo_id)  # every path under repos/ is built here: no '..' can walk out of the store
        return self.root / 'repos' / f'{repo_type}s' / repo_id

    def repo_meta(self, repo_type: str, repo_id: str) -> dict | None:
        try:
            return json.loads((self._dir(repo_type, repo_id) / 'repo.json').read_text())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool, author: str) -> None:
        """Create a repo whose ``main`` holds one commit with the default ``.gitattributes``, as the Hub does."""
        with self._lock:
            if self.repo_meta(repo_type, repo_id) is not None:
                raise StoreError(409, 'You already created this repo')
            d = self._dir(repo_type, repo_id)
            if d.exists():  # debris of an interrupted create or delete
                shutil.rmtree(d)
            attrs = self.put_bytes(GITATTRIBUTES.encode())
            commit = self._new_commit(
                (), {'.gitattributes': self.entry_for(attrs, False)}, 'initial commit', '', author
            )
            self._save_commit(repo_type, repo_id, commit)
            self._save_refs(repo_type, repo_id, {'heads': {'main': commit.id}, 'tags': {}, 'prs': {}})
            # repo.json last: a repo exists only once it is complete
            write_json_atomic(d / 'repo.json', {'private': private, 'created_at': now_iso()})

    def delete_repo(self, repo_type: str, repo_id: str) -> None:
        with self._lock:
            d = self._dir(repo_type, repo_id)
            (d / 'repo.json').unlink(missing_ok=True)  # invisible at once, even if the rmtree is interrupted
            shutil.rmtree(d, ignore_errors=True)

    def set_private(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self._lock:
            meta = self.repo_meta(repo_type, repo_id)
            if meta is None:
                raise _gone(repo_id)
            meta['private'] = private
            write_json_atomic(self._dir(repo_type, repo_id) / 'repo.json', meta)

    # ---- refs and commits ----------------------------------------------------------------------
    def refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        """Branches (``heads``), tags and PR refs; 404 when the repo is gone (deleted since the caller looked)."""
        try:
            return json.loads((self._dir(repo_type, repo_id) / 'refs.json').read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise _gone(repo_id) from None

    def _live_refs(self, repo_type: str, repo_id: str) -> dict[str, dict[str, str]]:
        """:meth:`refs` of a repo that exists (under ``self._lock``: a delete cannot then come in between)."""
        if self.repo_meta(repo_type, repo_id) is None:
            raise _gone(repo_id)
        return self.refs(repo_type, repo_id)

    def _save_refs(self, repo_type: str, repo_id: str, refs: dict) -> None:
        write_json_atomic(self._dir(repo_type, repo_id) / 'refs.json', refs)

    def read_commit(self, repo_type: str, repo_id: str, commit_id: str) -> Commit:
        try:
            text = (self._dir(repo_type, repo_id) / 'commits' / f'{commit_id}.json').read_text()
        except (FileNotFoundError, NotADirectoryError):
            if self.repo_meta(repo_type, repo_id) is None:
                raise _gone(repo_id) from None
            raise  # a ref to a commit that is not there: a damaged store, not the client's doing
        return Commit.from_json(json.loads(text))

    def _save_commit(self, repo_type: str, repo_id: str, commit: Commit) -> None:
        write_json_atomic(self._dir(repo_type, repo_id) / 'commits' / f'{commit.id}.json', commit.to_json())

    @staticmethod
    def _new_commit(
        parents: tuple[str, ...], files: dict[str, FileEntry], title: str, message: str, author: str
    ) -> Commit:
        date = now_iso()
        body = json.dumps([parents, sorted((p, f.git_oid) for p, f in files.items()), title, message, author, date])
        # a nonce keeps two identical commits made in the same millisecond apart, as git's would be by time
        commit_id = hashlib.sha1(body.encode() + secrets.token_bytes(8)).hexdigest()
        return Commit(commit_id, parents, title, message, author, date, files)

    def resolve(self, repo_type: str, repo_id: str, revision: str) -> str | None:
        """Commit id of a full commit id, ``refs/heads|tags|pr/...`` name, branch or tag; None if unknown.

        A full commit id comes first, as in git (``gitrevisions``): pinning ``revision=<sha>`` must give that
        commit whatever refs exist (ref names that look like commit ids are refused, but older stores may hold one).
        """
        if SHA1.match(revision) and (self._dir(repo_type, repo_id) / 'commits' / f'{revision}.json').is_file():
            return revision
        refs = self.refs(repo_type, repo_id)
        for prefix, kind in (('refs/heads/', 'heads'), ('refs/tags/', 'tags'), ('refs/pr/', 'prs')):
            if revision.startswith(prefix):
                return refs[kind].get(revision[len(prefix) :])
        if revision in refs['heads']:
            return refs['heads'][revision]
        return refs['tags'].get(revision)

    def history(self, repo_type: str, repo_id: str, commit_id: str) -> list[Commit]:
        """First-parent history, newest first."""
        out = []
        while commit_id:
            commit = self.read_commit(repo_type, repo_id, commit_id)
            out.append(commit)
            commit_id = commit.parents[0] if commit.parents else ''
        return out

    def _link_lfs(self, repo_type: str, repo_id: str, sha256: str) -> None:
        marker = self._dir(repo_type, repo_id) / 'lfs' / sha256
        marker.parent.mkdir(exist_ok=True)
        marker.touch()

    def has_lfs(self, repo_type: str, repo_id: str, sha256: str) -> bool:
        return bool(SHA256.match(sha256)) and (self._dir(repo_type, repo_id) / 'lfs' / sha256).is_file()

    def commit(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        ops: list[Op],
        *,
        title: str,
        message: str,
        author: str,
        parent_commit: str | None = None,
        create_pr: bool = False,
        staged: Iterable[StagedBlob] = (),
    ) -> tuple[Commit, int | None]:
        """Apply ``ops`` on top of branch (or PR ref) ``revision``; returns the commit and the new PR number.

        A regular file's blob is either stored already or one of ``staged``; an LFS file must have been uploaded
        to this repo. Every op is checked before anything is stored, staged blobs enter the store only once the
        commit is accepted, and the ref moves last: a refused or failed commit leaves no trace.
        """
        staged = {blob.sha256: blob for blob in staged}
        with self._lock:
            refs = self._live_refs(repo_type, repo_id)
            if revision.startswith('refs/pr/'):
                kind, name = 'prs', revision[len('refs/pr/') :]
            else:
                kind, name = 'heads', revision.removeprefix('refs/heads/')
            head = refs[kind].get(name)
            if head is None:
                base = self.resolve(repo_type, repo_id, revision)
                hint = 'commits go to a branch' if base else 'create the branch first'
                raise StoreError(
                    404, f'Revision {revision!r} is not a branch of {repo_id} ({hint})', 'RevisionNotFound'
                )
            if parent_commit is not None and parent_commit != head:
                raise StoreError(412, f'A commit has happened since {parent_commit}: {revision} is at {head}')
            files: dict[str, FileEntry | Op] = dict(self.read_commit(repo_type, repo_id, head).files)
            for op in ops:
                _checked(check_path, op.path)
                if op.kind == 'add':
                    if op.lfs and not self.has_lfs(repo_type, repo_id, op.sha256):
                        raise StoreError(422, f'LFS object {op.sha256} of {op.path!r} was not uploaded to {repo_id}')
                    if not op.lfs and op.sha256 not in staged and not self.has_blob(op.sha256):
                        raise StoreError(422, f'The content of {op.path!r} ({op.sha256}) was not sent with the commit')
                    files[op.path] = op  # its entry is made once the blobs are in place
                elif op.kind == 'delete':
                    if files.pop(op.path, None) is None:
                        raise StoreError(404, f"A file with this name doesn't exist: {op.path}", 'EntryNotFound')
                else:
                    prefix = op.path.rstrip('/') + '/'
                    gone = [p for p in files if p.startswith(prefix)]
                    if not gone:
                        raise StoreError(404, f"A folder with this name doesn't exist: {op.path}", 'EntryNotFound')
                    for p in gone:
                        del files[p]
            clash = file_folder_clash(files, (op.path for op in ops if op.kind == 'add'))
            if clash is not None:
                raise StoreError(
                    409, f'{clash!r} would be both a file and a folder in {revision}: git cannot store that, delete one'
                )
            for blob in staged.values():
                self._publish(blob)
            entries = {p: self._entry(f, staged) if isinstance(f, Op) else f for p, f in files.items()}
            commit = self._new_commit((head,), entries, title, message, author)
            self._save_commit(repo_type, repo_id, commit)
            pr_num = None
            if create_pr:
                pr_num = max((int(n) for n in refs['prs']), default=0) + 1
                refs['prs'][str(pr_num)] = commit.id
            else:
                refs[kind][name] = commit.id
            self._save_refs(repo_type, repo_id, refs)
            return commit, pr_num

    def _entry(self, op: Op, staged: dict[str, StagedBlob]) -> FileEntry:
        blob = staged.get(op.sha256)
        if blob is not None and not op.lfs:
            return FileEntry(blob.sha256, blob.size, blob.git_oid, False)
        return self.entry_for(op.sha256, op.lfs)

    def set_ref(self, repo_type: str, repo_id: str, kind: str, name: str, commit_id: str | None) -> None:
        """Create (``commit_id``) or delete (None) a branch (``heads``) or tag (``tags``), as git would.

        A new name must pass :func:`check_ref_name` (git's rules, and never a name that looks like a commit id), be
        new, and be neither a folder of existing refs of its kind nor inside one (``a`` and ``a/b``: git keeps refs
        as files). The default branch cannot be deleted.
        """
        what = 'Branch' if kind == 'heads' else 'Tag'
        if commit_id is not None:
            _checked(check_ref_name, name, what.lower())
        with self._lock:
            refs = self._live_refs(repo_type, repo_id)
            if commit_id is None:
                if kind == 'heads' and name == DEFAULT_BRANCH:
                    raise StoreError(403, f'The default branch {DEFAULT_BRANCH!r} cannot be deleted')
                if refs[kind].pop(name, None) is None:
                    raise StoreError(404, f'{what} {name!r} does not exist', 'RevisionNotFound')
            elif name in refs[kind]:
                raise StoreError(409, f'{what} {name!r} already exists')
            else:
                clash = next((n for n in refs[kind] if n.startswith(f'{name}/') or name.startswith(f'{n}/')), None)
                if clash is not None:
                    raise StoreError(
                        409,
                        f'{what} {name!r} cannot be created while {what.lower()} {clash!r} exists: '
                        "one ref name cannot be another's folder (git keeps refs as files)",
                    )
                refs[kind][name] = commit_id
            self._save_refs(repo_type, repo_id, refs)
