"""Atomic file writes, the one way every tier writes a file that others read (results, checkpoints' metadata,
the Hub server's store): readers see the old file or the new one, never half of one, and a crash leaves no
half-written file behind."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)


def _file_mode(path: Path) -> int:
    """The mode a plain ``open(path, 'w')`` would give: the existing file's, else 0o666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        pass
    umask = 0o022
    try:
        with open('/proc/self/status') as f:  # reading the umask without setting it (os.umask is process-wide)
            umask = next((int(line.split()[1], 8) for line in f if line.startswith('Umask:')), umask)
    except OSError:
        pass
    return 0o666 & ~umask


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file so that readers see the old one or the new one, never half of one.

    The file gets the permissions a plain write would give (``mkstemp`` alone would make it private, 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    return write_atomic(path, json.dumps(data, indent=2, sort_keys=False) + '\n')


def write_figure_atomic(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG (no software stamp, so unchanged plots stay byte-identical), atomically."""
    png = io.BytesIO()
    fig.savefig(png, format='png', dpi=dpi, metadata={'Software': None})
    write_atomic(path, png.getvalue())


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


# ---- directories: a checkpoint, a model folder, a prepared dataset -------------------------------------------
def fsync_tree(path: str | os.PathLike) -> None:
    """Flush every file below ``path`` and the directories themselves to disk, so a rename that follows is durable."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), 'rb') as f:
                os.fsync(f.fileno())
        _fsync_dir(root)


def _fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory file descriptors (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_dir_beside(dst: str | os.PathLike) -> Path:
    """A fresh hidden directory in the same parent as ``dst`` (same file system, so a rename can publish it)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f'.{dst.name}.tmp-{uuid.uuid4().hex[:8]}'
    tmp.mkdir()
    return tmp


def replace_dir(tmp: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Publish the finished directory ``tmp`` as ``dst``, replacing any previous ``dst``.

    POSIX cannot rename a directory over a non-empty one, so the old one is first renamed aside to ``.<name>.old``.
    Whatever moment the process dies, one complete version stays on disk: ``dst`` itself, or ``.<name>.old``,
    which ``recover_dir`` puts back.
    """
    tmp, dst = Path(tmp), Path(dst)
    fsync_tree(tmp)
    old = dst.parent / f'.{dst.name}.old'
    if old.exists():
        shutil.rmtree(old)
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(dst: str | os.PathLike) -> Path:
    """Undo a ``replace_dir`` that was interrupted between its two renames; returns ``dst``."""
    dst = Path(dst)
    old = dst.parent / f'.{dst.name}.old'
    if not dst.exists() and old.exists():
        logger.warning('restoring %s from %s (a previous write was interrupted)', dst, old)
        os.replace(old, dst)
    return dst


def remove_debris(dst: str | os.PathLike) -> list[Path]:
    """Remove what interrupted writes of ``dst`` left beside it; returns the paths removed.

    That is the ``.<name>.tmp-*`` folders of ``temp_dir_beside``, the temporary files of ``write_atomic``
    (``.<name>.`` and eight characters) and a ``.<name>.old`` that ``replace_dir`` did not get to delete. An
    interrupted replacement is first put back (``recover_dir``), so ``.<name>.old`` goes only when ``dst`` exists.
    Call it only where no other process is writing ``dst``.
    """
    dst = recover_dir(dst)
    removed = []
    if not dst.parent.is_dir():
        return removed
    prefix = f'.{dst.name}.'
    for path in dst.parent.iterdir():
        if not path.name.startswith(prefix):
            continue
        rest = path.name[len(prefix) :]
        if rest.startswith('tmp-') and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif rest == 'old' and dst.exists() and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif len(rest) == 8 and path.is_file() and not path.is_symlink():  # tempfile.mkstemp's random suffix
            path.unlink()
        else:
            continue
        removed.append(path)
    if removed:
        logger.info('removed %s (left by an interrupted write of %s)', [p.name for p in removed], dst)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()
