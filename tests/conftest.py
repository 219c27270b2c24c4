"""Test-wide settings. The environment block runs before anything imports huggingface_hub, timm or
datasets: ``HF_ENDPOINT`` is read once, at import time, so the local Hub server's port is chosen here."""

from __future__ import annotations

import os
import socket
import tempfile


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


HUB_PORT = _free_port()
_HF_HOME = tempfile.mkdtemp(prefix='hz-hf-home-')
os.environ.update(
    HF_ENDPOINT=f'http://127.0.0.1:{HUB_PORT}',
    HF_HUB_DISABLE_XET='1',  # large files would otherwise go through the Xet protocol
    HF_HUB_DISABLE_TELEMETRY='1',
    HF_HUB_DISABLE_PROGRESS_BARS='1',
    HF_HOME=_HF_HOME,  # a private cache: tests never see (or write) the user's tokens or downloads
    HF_DATASETS_CACHE=os.path.join(_HF_HOME, 'datasets'),
    TOKENIZERS_PARALLELISM='false',
    OMP_NUM_THREADS=os.environ.get('OMP_NUM_THREADS', '2'),
)
os.environ.pop('HF_TOKEN', None)

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

# Property tests explore the same examples on every run, so a CI run is red only for a change that breaks them;
# a wider search is deliberate: HYPOTHESIS_PROFILE=explore draws new examples (print_blob names how to replay one)
settings.register_profile('default', derandomize=True, database=None, print_blob=True)
settings.register_profile('explore', derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'default'))

torch.manual_seed(0)


# tests are laid out like the package; each tier's folder carries the marker of its install extra, so
# `pytest -m "not train and not hub and not bench"` runs the core (models, layers, export) alone
TIER_MARKERS = {'train': 'train', 'hub': 'hub', 'benchmarks': 'bench'}


def pytest_collection_modifyitems(config, items):
    root = os.path.dirname(__file__)
    for item in items:
        tier = os.path.relpath(str(item.path), root).split(os.sep)[0]
        if tier in TIER_MARKERS:
            item.add_marker(TIER_MARKERS[tier])


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- local Hub server (tests marked `hub`) ------------------------------------------------------------
# Test-only credentials of the local server; they open nothing anywhere else.
HUB_TOKENS = {
    'alice': 'hf_test_alice_0123456789',  # owns the alice namespace and is a member of the zoo org
    'bob': 'hf_test_bob_0123456789',
    'carol': 'hf_test_carol_read_only',  # a read-only token
}


@pytest.fixture(scope='session')
def hub_server(tmp_path_factory):
    """The local Hub-protocol server on ``HUB_PORT`` (= ``HF_ENDPOINT``), shared by the session."""
    from hybrid_zoo.hub.server import HubServer

    tokens = {HUB_TOKENS['alice']: 'alice', HUB_TOKENS['bob']: 'bob', HUB_TOKENS['carol']: ('carol', 'read')}
    server = HubServer(
        tmp_path_factory.mktemp('hub-data'),
        port=HUB_PORT,
        tokens=tokens,
        orgs={'zoo': ['alice'], 'hybrid-zoo': ['alice']},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def hub_tokens() -> dict[str, str]:
    return dict(HUB_TOKENS)


@pytest.fixture
def hf_token(monkeypatch, hub_server) -> str:
    """Log in as alice through ``HF_TOKEN``, as a user would."""
    monkeypatch.setenv('HF_TOKEN', HUB_TOKENS['alice'])
    return HUB_TOKENS['alice']
