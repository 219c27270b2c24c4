"""Output paths checked before a command does any work.

A folder a command cannot make (a file stands where it or one of its parents would go) or cannot write in would
otherwise surface as an ``OSError`` traceback, after the data was prepared or the models were trained. Each command
checks its outputs right after parsing, with the standard library alone, and answers with one line naming the flag,
the path and what is in the way.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PathLike = str | os.PathLike


def _writable_folder_problem(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` or in the folders creating it would make (None: they can)."""
    # the deepest part of the path that is there (a dangling link counts: mkdir cannot replace it either)
    nearest = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not nearest.is_dir():
        return f'cannot be written: {nearest} is not a folder'
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f'cannot be written: {nearest} is a folder this user cannot write in'
    return None


def folder_problem(path: PathLike) -> str | None:
    """Why ``path`` cannot be made (if missing) and written in as a folder, or None when it can."""
    path = Path(path).absolute()
    if os.path.lexists(path) and not path.is_dir():
        return 'is a file; expected a folder'
    return _writable_folder_problem(path)


def file_problem(path: PathLike) -> str | None:
    """Why a file cannot be written (or replaced) at ``path``, or None when it can: its folder must be makeable and
    writable, since files are written beside their final name and then moved over it (``hybrid_zoo.atomic``)."""
    path = Path(path).absolute()
    if path.is_dir():
        return 'is a folder; expected the path of a file to write'
    return _writable_folder_problem(path.parent)


def unwritable_output(
    folders: Mapping[str, PathLike | None] | None = None, files: Mapping[str, PathLike | None] | None = None
) -> str | None:
    """``'FLAG PATH: why'`` for the first output that cannot be written, or None when all can.

    Args:
        folders: flag -> folder the command makes and writes in (None: not asked for, skipped).
        files: flag -> file the command writes (None: skipped).
    """
    checks = [(flag, path, folder_problem) for flag, path in (folders or {}).items()]
    checks += [(flag, path, file_problem) for flag, path in (files or {}).items()]
    for flag, path, problem_of in checks:
        if path is not None and (problem := problem_of(path)):
            return f'{flag} {path}: {problem}'
    return None
