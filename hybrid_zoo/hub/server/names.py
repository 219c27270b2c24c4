"""Names the local Hub server accepts: repo ids, file paths in a repo, and branch or tag names.

Every name is checked where it enters (a create, a commit, a new ref), so everything stored follows both git's
rules (``git check-ref-format``, git's ``verify_path``) and the Hub's (repo ids, no control characters).
"""

from __future__ import annotations

import re
import unicodedata

_NAME = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$')
SHA1 = re.compile(r'^[0-9a-f]{40}$')
SHA256 = re.compile(r'^[0-9a-f]{64}$')
# ASCII letters, digits and . _ - / only: a strict subset of what git allows, and what the Hub's refs use
_REF_CHARS = re.compile(r'^[A-Za-z0-9._/-]+$')
MAX_REF_LENGTH = 255
MAX_PATH_BYTES = 4096


class InvalidName(ValueError):
    """A name the Hub or git would refuse; the message says what was expected and what was given."""


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it is ``namespace/name`` with Hub-valid parts; raises :class:`InvalidName` otherwise."""
    parts = repo_id.split('/') if isinstance(repo_id, str) else []
    if len(parts) != 2 or not all(_NAME.match(p) and '..' not in p and '--' not in p for p in parts):
        raise InvalidName(
            f"Invalid repo id {repo_id!r}: expected 'namespace/name', each part 1-96 letters, digits, '.', '_' or '-'"
            " (no '--' or '..', not starting or ending with '.' or '-')"
        )
    return repo_id


def _has_control(text: str) -> bool:
    # Cc: C0, DEL and C1 controls (CR/LF among them); Cs: lone surrogates, which cannot be encoded as UTF-8
    return any(unicodedata.category(ch) in ('Cc', 'Cs') for ch in text)


def check_path(path: str) -> str:
    """``path`` if git and the Hub accept it as a file path in a repo; raises :class:`InvalidName` otherwise."""
    if not isinstance(path, str):
        raise InvalidName(f'Invalid path in repo: expected a string, got {type(path).__name__}')
    parts = path.split('/')
    if (
        not path
        or path.startswith('/')
        or any(p in ('', '.', '..') or p.lower() == '.git' for p in parts)
        or _has_control(path)
        or len(path.encode('utf-8', 'replace')) > MAX_PATH_BYTES
    ):
        raise InvalidName(
            f"Invalid path in repo: {path!r}: expected a relative path of '/'-separated names, none empty, '.', "
            f"'..' or '.git', without control characters (CR, LF, NUL...), at most {MAX_PATH_BYTES} bytes"
        )
    return path


def check_ref_name(name: str, what: str = 'branch') -> str:
    """``name`` if it may name a new branch or tag (``what``); raises :class:`InvalidName` otherwise.

    The rules are ``git check-ref-format``'s, restricted to ASCII letters, digits and ``. _ - /``, plus: no name
    that looks like a full commit id (git resolves those first, and so does this server: a branch named like
    commit A must never stand for another commit), no ``refs/`` prefix, no leading ``-``, not ``HEAD``, at most
    255 characters.
    """
    reason = None
    if not isinstance(name, str) or not name:
        reason = 'it is empty'
    elif len(name) > MAX_REF_LENGTH:
        reason = f'it is longer than {MAX_REF_LENGTH} characters'
    elif not _REF_CHARS.match(name):
        reason = "only ASCII letters, digits, '.', '_', '-' and '/' are allowed"
    elif re.fullmatch(r'[0-9a-fA-F]{40}', name):
        reason = 'it looks like a full commit id'
    elif name.startswith(('refs/', '-')) or name == 'HEAD':
        reason = "it starts with 'refs/' or '-', or is 'HEAD'"
    elif name.startswith('/') or name.endswith(('/', '.')) or '//' in name or '..' in name:
        reason = "it starts or ends with '/', ends with '.', or holds '//' or '..'"
    elif any(part.startswith('.') or part.endswith('.lock') for part in name.split('/')):
        reason = "a '/'-separated part starts with '.' or ends with '.lock'"
    if reason:
        shown = name if isinstance(name, str) else type(name).__name__
        raise InvalidName(f'Invalid {what} name {shown!r}: {reason} (git check-ref-format and the Hub refuse it)')
    return name
