"""A local server that speaks the Hugging Face Hub's HTTP protocol, for offline demos and tests.

The real ``huggingface_hub`` client (and timm, datasets on top of it) runs against it unchanged: point
``HF_ENDPOINT`` at it and set ``HF_HUB_DISABLE_XET=1`` *before* importing any of them (the endpoint is
read at import; the server speaks LFS, not Xet). It keeps users and tokens, private repos that others
cannot see, owner-only writes, branches, tags and PR refs, LFS uploads, model/dataset/space repos and
commit history, in a content-addressed store on disk (``store.py``). The standard library is its only
dependency (PyYAML, when installed, parses model card metadata), and its modules import each other relatively,
so ``hybrid_zoo_cli.hub_server`` can run it without the model package (torch and timm).

From the command line (tokens in a file or ``HZ_HUB_TOKENS`` stay out of ``ps``)::

    echo alice:hf_alice_secret > tokens.txt
    hybrid-zoo hub-server --port 8765 --data-dir ./hub-data --token-file tokens.txt
    export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_alice_secret
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
from collections.abc import Iterable, Mapping

from hybrid_zoo_cli.hub_server import TOKENS_ENV, build_parser

from .server import HubServer
from .store import DataDirError, Store, StoreError

__all__ = ['HubServer', 'Store', 'StoreError', 'DataDirError', 'build_parser', 'main', 'parse_tokens', 'read_tokens']


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


def _parse_orgs(specs: list[str]) -> dict[str, list[str]]:
    orgs = {}
    for spec in specs:
        org, sep, members = spec.partition(':')
        if not (org and sep):
            raise ValueError(f'--org expects ORG:USER[,USER...], got {spec!r}')
        orgs[org] = [m for m in members.split(',') if m]
    return orgs


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run ``hybrid-zoo hub-server``; returns 2 (one line on stderr) when it cannot start."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(message)s')
    try:
        tokens, orgs = read_tokens(args), _parse_orgs(args.org)
        hub = HubServer(args.data_dir, host=args.host, port=args.port, tokens=tokens, orgs=orgs)
    except (ValueError, DataDirError) as e:
        print(f'hybrid-zoo hub-server: {e}', file=sys.stderr)
        return 2
    except OSError as e:
        hint = ' (choose another --port, or 0 for a free one)' if e.errno == errno.EADDRINUSE else ''
        print(f'hybrid-zoo hub-server: cannot listen on {args.host}:{args.port}: {e.strerror}{hint}', file=sys.stderr)
        return 2
    users = sorted({user for user, _ in tokens.values()})
    # tokens are the operator's to hand out: the server never echoes them
    print(f'Hub server on {hub.url} (data in {args.data_dir}); users: {", ".join(users) or "none (read-only)"}')
    print(f'Clients: export HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<one of the tokens given>')
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0
