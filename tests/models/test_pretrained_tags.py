"""Registered pretrained tags: weights that cannot be fetched fail fast and say where they are expected;
weights a Hub server holds load through the tag's name."""

from __future__ import annotations

import socket
import time

import pytest
import timm
import torch

from hybrid_zoo.models.pretrained import (
    FASHION_MNIST_CLASSES,
    HUB_ORG,
    PretrainedWeightsNotFoundError,
    check_weights_reachable,
)

pytestmark = [
    pytest.mark.hub,
    # huggingface_hub's LFS upload hands httpx a file object as `data=`; its deprecation is not ours to fix
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]


@pytest.fixture
def dead_endpoint(monkeypatch) -> str:
    """``HF_ENDPOINT`` as huggingface_hub resolved it at import, pointed at a local port nothing listens on."""
    import huggingface_hub.constants as hf_constants

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    endpoint = f'http://127.0.0.1:{port}'
    monkeypatch.setattr(hf_constants, 'ENDPOINT', endpoint)
    # downloads build their URLs from this template, derived from the endpoint once
    monkeypatch.setattr(
        hf_constants, 'HUGGINGFACE_CO_URL_TEMPLATE', endpoint + '/{repo_id}/resolve/{revision}/{filename}'
    )
    return endpoint


def test_unreachable_tag_fails_fast_and_says_where_and_how(dead_endpoint, tmp_path):
    tag = 'convformer_tiny_late.fmnist_64'
    start = time.monotonic()
    with pytest.raises(PretrainedWeightsNotFoundError) as caught:
        timm.create_model(tag, pretrained=True, cache_dir=tmp_path)  # an empty cache: nothing to fall back on
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert isinstance(caught.value, RuntimeError)
    assert f'{HUB_ORG}/{tag}' in message and dead_endpoint in message
    assert 'hybrid-zoo hub-server --data-dir' in message and 'HF_ENDPOINT=http://127.0.0.1:<port>' in message
    assert 'hybrid-zoo compare --publish' in message and 'hybrid-zoo demo' in message


def test_offline_mode_without_cached_weights_fails_without_a_request(dead_endpoint, monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PretrainedWeightsNotFoundError, match='HF_HUB_OFFLINE is set'):
        timm.create_model('convformer_tiny.fmnist_64', pretrained=True, cache_dir=tmp_path)


def test_untagged_and_explicit_sources_are_not_checked(dead_endpoint):
    check_weights_reachable(timm.models.get_pretrained_cfg('convformer_tiny').to_dict())  # no hf_hub_id
    cfg = timm.models.get_pretrained_cfg('convformer_tiny.fmnist_64').to_dict()
    check_weights_reachable(dict(cfg, file='/somewhere/model.safetensors'))  # timm prefers the file
    check_weights_reachable(dict(cfg, source='hf-hub'))  # an hf-hub: name has read its repo already


def test_tag_loads_weights_a_hub_server_holds(hub_server, hf_token, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from hybrid_zoo.hub import client as hub

    tag = 'convformer_tiny.fmnist_64'
    model = timm.create_model(tag).eval()  # the tag's own cfg: convformer_tiny, 1 channel, 10 classes
    assert (model.in_chans, model.num_classes) == (1, 10)
    hub.push(model, f'{HUB_ORG}/{tag}', model_config={'label_names': list(FASHION_MNIST_CLASSES)})
    loaded = timm.create_model(tag, pretrained=True, cache_dir=tmp_path).eval()
    reference = model.state_dict()
    assert loaded.state_dict().keys() == reference.keys()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())
    with torch.no_grad():
        x = torch.rand(1, 1, 64, 64)
        assert torch.equal(loaded(x), model(x))
    # once cached, the check needs no endpoint at all
    monkeypatch.setattr(huggingface_hub.constants, 'HUGGINGFACE_CO_URL_TEMPLATE', 'http://127.0.0.1:9/{repo_id}/x')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    check_weights_reachable(timm.models.get_pretrained_cfg(tag).to_dict(), cache_dir=tmp_path)
