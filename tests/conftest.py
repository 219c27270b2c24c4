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

torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
