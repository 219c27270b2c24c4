"""A local server that speaks the Hugging Face Hub's HTTP protocol, for offline demos and tests.

The real ``huggingface_hub`` client (and timm, datasets on top of it) runs against it unchanged: point
``HF_ENDPOINT`` at it and set ``HF_HUB_DISABLE_XET=1`` *before* importing any of them (the endpoint is
read at import; the server speaks LFS, not Xet). It keeps users and tokens, private repos that others
cannot see, owner-only writes, branches, tags and PR refs, LFS uploads, model/dataset/space repos and
commit history, in a content-addressed store on disk (``store.py``). No third-party dependency.

From the command line::

    hybrid-zoo hub-server --port 8765 --data-dir ./hub-data --token alice:hf_alice_secret
    export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_alice_secret
"""

from __future__ import annotations

import logging
import signal
import sys

from hybrid_zoo.hub.server.server import HubServer
from hybrid_zoo.hub.server.store import Store, StoreError
from hybrid_zoo_cli.hub_server import build_parser

__all__ = ['HubServer', 'Store', 'StoreError', 'build_parser', 'main', 'parse_tokens']


def parse_tokens(specs: list[str]) -> dict[str, tuple[str, str]]:
    """``['alice:tok', 'bob:tok2:read']`` -> ``{'tok': ('alice', 'write'), 'tok2': ('bob', 'read')}``."""
    tokens = {}
    for spec in specs:
        user, sep, rest = spec.partition(':')
        token, _, role = rest.partition(':')
        if not (user and sep and token) or role not in ('', 'read', 'write'):
            raise ValueError(f'--token expects USER:TOKEN or USER:TOKEN:read, got {spec.split(":")[0]}:...')
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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(message)s')
    try:
        tokens, orgs = parse_tokens(args.token), _parse_orgs(args.org)
    except ValueError as e:
        print(f'hybrid-zoo hub-server: {e}', file=sys.stderr)
        return 2
    hub = HubServer(args.data_dir, host=args.host, port=args.port, tokens=tokens, orgs=orgs)
    users = sorted({user for user, _ in tokens.values()})
    # tokens are the operator's to hand out: the server never echoes them
    print(f'Hub server on {hub.url} (data in {args.data_dir}); users: {", ".join(users) or "none (read-only)"}')
    print(f'Clients: export HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<a token given with --token>')
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    try:
        hub.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()
    return 0
