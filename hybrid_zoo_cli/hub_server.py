"""Command line of ``hybrid-zoo hub-server``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo hub-server',
        description='Run a local Hugging Face Hub-protocol server (offline demos and tests). Clients need '
        'HF_ENDPOINT=http://HOST:PORT and HF_HUB_DISABLE_XET=1 in their environment.',
    )
    p.add_argument('--host', default='127.0.0.1', help='interface to bind (default: %(default)s, this machine only)')
    p.add_argument('--port', type=int, default=8765, help='TCP port; 0 picks a free one (default: %(default)s)')
    p.add_argument(
        '--data-dir', required=True, help='folder of the content-addressed store; repos persist across restarts'
    )
    p.add_argument(
        '--token',
        action='append',
        default=[],
        metavar='USER:TOKEN[:read]',
        help='a user and an access token (write access to the USER namespace unless :read); repeatable. '
        'Without any token the server is read-only.',
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
