"""``hybrid-zoo hub-server``: its command line, and the server run on its own.

The server itself (``hybrid_zoo/hub/server/``) needs only the standard library and PyYAML, but importing it as
``hybrid_zoo.hub.server`` first runs ``hybrid_zoo/__init__.py``, which imports torch and timm (seconds, and about
800 MB that a long-running server would keep). :func:`main` therefore loads the server folder as a package of its
own, without its parents, unless the full package is already imported. ``python -m hybrid_zoo_cli hub-server``
runs it that way.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import os
import signal
import sys
from types import ModuleType

_STANDALONE = 'hybrid_zoo_hub_server'  # the server package's name when loaded without hybrid_zoo


MAX_PORT = 65535


def port_number(text: str) -> int:
    """``--port``: an integer from 0 (any free port) to 65535, or an argparse error saying so."""
    try:
        port = int(text)
    except ValueError:
        port = None
    if port is None or not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f'expected an integer from 0 (any free port) to {MAX_PORT}, got {text!r}')
    return port


def build_parser() -> argparse.ArgumentParser:
    tokens_env = load_server().TOKENS_ENV
    p = argparse.ArgumentParser(
        prog='hybrid-zoo hub-server',
        description='Run a local Hugging Face Hub-protocol server (offline demos and tests). Clients need '
        'HF_ENDPOINT=http://HOST:PORT and HF_HUB_DISABLE_XET=1 in their environment. Tokens come from --token, '
        f'--token-file and the {tokens_env} environment variable (USER:TOKEN[:read] specs separated by commas or '
        'spaces), all together; without any token the server is read-only.',
    )
    p.add_argument('--host', default='127.0.0.1', help='interface to bind (default: %(default)s, this machine only)')
    p.add_argument(
        '--port', type=port_number, default=8765, help='TCP port, 0 to 65535; 0 picks a free one (default: %(default)s)'
    )
    p.add_argument(
        '--data-dir',
        required=True,
        help='folder of the content-addressed store; repos persist across restarts. One server per folder: '
        'the server locks it, and a second one on the same folder refuses to start',
    )
    p.add_argument(
        '--token',
        action='append',
        default=[],
        metavar='USER:TOKEN[:read]',
        help='a user and an access token (write access to the USER namespace unless :read); repeatable. '
        f'Command-line arguments are visible to every local user (ps); prefer --token-file or {tokens_env} '
        'outside throwaway setups',
    )
    p.add_argument(
        '--token-file',
        action='append',
        default=[],
        metavar='PATH',
        help='a file of USER:TOKEN[:read] lines (blank lines and # comments ignored); repeatable',
    )
    p.add_argument(
        '--org',
        action='append',
        default=[],
        metavar='ORG:USER[,USER...]',
        help='an organisation and its members, who may write to the ORG namespace; repeatable',
    )
    p.add_argument('--log-level', default='INFO', help='logging level (default: %(default)s; DEBUG logs each request)')
    return p


def load_server() -> ModuleType:
    """The server package: ``hybrid_zoo.hub.server`` if already imported, else the same files loaded on their own.

    The server's modules import each other relatively and nothing else from ``hybrid_zoo``, so loading their
    folder as a top-level package runs them without ``hybrid_zoo/__init__.py`` (torch and timm). Use this
    only where nothing else in the process imports ``hybrid_zoo.hub.server`` (the command line): the two
    would be distinct copies of the same classes.
    """
    for name in ('hybrid_zoo.hub.server', _STANDALONE):
        if name in sys.modules:
            return sys.modules[name]
    spec = importlib.util.find_spec('hybrid_zoo')  # finds the top-level package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError('hybrid_zoo is not installed: cannot find the hub server')
    folder = os.path.join(list(spec.submodule_search_locations)[0], 'hub', 'server')
    server_spec = importlib.util.spec_from_file_location(
        _STANDALONE, os.path.join(folder, '__init__.py'), submodule_search_locations=[folder]
    )
    module = importlib.util.module_from_spec(server_spec)
    sys.modules[_STANDALONE] = module
    try:
        server_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_STANDALONE]
        raise
    return module


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
    """Run the server (see :mod:`hybrid_zoo.hub.server`) without importing torch or timm; returns 2 (one line on
    stderr) when it cannot start."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format='%(asctime)s %(levelname)s %(message)s')
    server = load_server()
    HubServer, DataDirError, read_tokens = server.HubServer, server.DataDirError, server.read_tokens
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


if __name__ == '__main__':
    sys.exit(main())
