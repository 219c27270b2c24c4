"""Command line of ``hybrid-zoo hub-server``.

The server itself (``hybrid_zoo/hub/server/``) needs only the standard library and PyYAML, but importing it as
``hybrid_zoo.hub.server`` first runs ``hybrid_zoo/__init__.py``, which imports torch and timm (seconds, and about
800 MB that a long-running server would keep). :func:`main` therefore loads the server folder as a package of its
own, without its parents, unless the full package is already imported. ``python -m hybrid_zoo_cli.hub_server``
runs it that way.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from types import ModuleType

TOKENS_ENV = 'HZ_HUB_TOKENS'
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
    p = argparse.ArgumentParser(
        prog='hybrid-zoo hub-server',
        description='Run a local Hugging Face Hub-protocol server (offline demos and tests). Clients need '
        'HF_ENDPOINT=http://HOST:PORT and HF_HUB_DISABLE_XET=1 in their environment. Tokens come from --token, '
        f'--token-file and the {TOKENS_ENV} environment variable (USER:TOKEN[:read] specs separated by commas or '
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
        f'Command-line arguments are visible to every local user (ps); prefer --token-file or {TOKENS_ENV} '
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


def main(argv: list[str] | None = None) -> int:
    """Run the server (see :func:`hybrid_zoo.hub.server.main`) without importing torch or timm."""
    return load_server().main(argv)


if __name__ == '__main__':
    sys.exit(main())
