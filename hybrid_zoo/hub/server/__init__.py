"""A local server that speaks the Hugging Face Hub's HTTP protocol, for offline demos and tests.

The real ``huggingface_hub`` client (and timm, datasets on top of it) runs against it unchanged: point
``HF_ENDPOINT`` at it and set ``HF_HUB_DISABLE_XET=1`` *before* importing any of them (the endpoint is
read at import; the server speaks LFS, not Xet). It keeps users and tokens, private repos that others
cannot see, owner-only writes, branches, tags and PR refs, LFS uploads, model/dataset/space repos and
commit history, in a content-addressed store on disk (``store.py``). The standard library is its only
dependency (PyYAML, when installed, parses model card metadata), and its modules import each other relatively,
so ``hybrid-zoo hub-server`` can run it without the model package (torch and timm).

From the command line (tokens in a file or ``HZ_HUB_TOKENS`` stay out of ``ps``)::

    echo alice:hf_alice_secret > tokens.txt
    hybrid-zoo hub-server --port 8765 --data-dir ./hub-data --token-file tokens.txt
    export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_alice_secret
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from .server import HubServer
from .store import DataDirError, Store, StoreError

__all__ = ['TOKENS_ENV', 'HubServer', 'Store', 'StoreError', 'DataDirError', 'parse_tokens', 'read_tokens']

TOKENS_ENV = 'HZ_HUB_TOKENS'  # USER:TOKEN[:read] specs, read with --token and --token-file (they stay out of ps)


def parse_tokens(specs: list[str], source: str = '--token') -> dict[str, tuple[str, str]]:
    """``['alice:tok', 'bob:tok2:read']`` -> ``{'tok': ('alice', 'write'), 'tok2': ('bob', 'read')}``.

    Raises:
        ValueError: A spec is not ``USER:TOKEN[:read|write]``, or one token is given twice (it could only ever
            log in one of the two users). Messages never repeat a token.
    """
    return _collect_tokens((spec, source) for spec in specs)


def read_tokens(args, environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """Tokens from ``--token``, ``--token-file`` and the ``HZ_HUB_TOKENS`` variable, all together.

    A token file holds one ``USER:TOKEN[:read]`` per line (blank lines and ``#`` comments ignored); the variable
    holds specs separated by commas or whitespace. Unlike ``--token``, neither shows in ``ps``.

    Raises:
        ValueError: A file cannot be read, a spec is malformed, or a token is given twice.
    """
    environ = os.environ if environ is None else environ
    specs = [(spec, '--token') for spec in args.token]
    for path in args.token_file:
        try:
            with open(path) as f:
                lines = [line.strip() for line in f]
        except OSError as e:
            raise ValueError(f'--token-file {path!r} cannot be read: {e.strerror}') from None
        specs += [(line, f'--token-file {path}') for line in lines if line and not line.startswith('#')]
    specs += [(spec, TOKENS_ENV) for spec in environ.get(TOKENS_ENV, '').replace(',', ' ').split()]
    return _collect_tokens(specs)


def _collect_tokens(specs: Iterable[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    tokens: dict[str, tuple[str, str]] = {}
    for spec, source in specs:
        user, sep, rest = spec.partition(':')
        token, _, role = rest.partition(':')
        if not (user and sep and token) or role not in ('', 'read', 'write'):
            raise ValueError(f'{source} expects USER:TOKEN or USER:TOKEN:read, got {user}:...')
        if token in tokens:
            raise ValueError(
                f'{source}: one token is given to both {tokens[token][0]!r} and {user!r}; each token must be unique'
            )
        tokens[token] = (user, role or 'write')
    return tokens
