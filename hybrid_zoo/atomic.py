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


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file so that readers see the old one or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
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


# ----------------------------------------------------------------------------------------------------------------------
# Embedded default data
