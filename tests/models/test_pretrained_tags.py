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


def pin(monkeypatch, tag: str, commit: str, sha256: str | None) -> None:
    """Register ``tag`` as published at ``commit`` with ``sha256``, as a publish records it."""
    import dataclasses

    from timm.models import _registry

    from hybrid_zoo.models import pretrained

    monkeypatch.setitem(pretrained.PUBLISHED, tag, (commit, sha256))
    cfg = dataclasses.replace(timm.models.get_pretrained_cfg(tag), hf_hub_id=f'{HUB_ORG}/{tag}@{commit}')
    monkeypatch.setitem(_registry._model_pretrained_cfgs, tag, cfg)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_tag_loads_weights_a_hub_server_holds(hub_server, hf_token, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from hybrid_zoo.factory import sha256_file
    from hybrid_zoo.hub import client as hub

    tag = 'convformer_tiny.fmnist_64'
    model = timm.create_model(tag).eval()  # the tag's own cfg: convformer_tiny, 1 channel, 10 classes
    assert (model.in_chans, model.num_classes) == (1, 10)
    info = hub.push(model, f'{HUB_ORG}/{tag}', model_config={'label_names': list(FASHION_MNIST_CLASSES)})
    weights = huggingface_hub.hf_hub_download(f'{HUB_ORG}/{tag}', 'model.safetensors', revision=info.oid)
    pin(monkeypatch, tag, info.oid, sha256_file(weights))
    loaded = timm.create_model(tag, pretrained=True, cache_dir=tmp_path).eval()
    assert same_weights(model, loaded)
    with torch.no_grad():
        x = torch.rand(1, 1, 64, 64)
        assert torch.equal(loaded(x), model(x))
    # once cached, the check needs no endpoint at all
    monkeypatch.setattr(huggingface_hub.constants, 'HUGGINGFACE_CO_URL_TEMPLATE', 'http://127.0.0.1:9/{repo_id}/x')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    check_weights_reachable(timm.models.get_pretrained_cfg(tag).to_dict(), cache_dir=tmp_path)


def test_a_tag_names_one_set_of_weights_whatever_its_repo_holds_now(hub_server, hf_token, tmp_path, monkeypatch):
    """Weights pushed over a tag's repo afterwards (the demo's, anyone's) are never what the tag loads: the tag is
    pinned to its commit and sha256; a pin that the repo or the cache does not honour is refused by name."""
    import huggingface_hub

    from hybrid_zoo import factory
    from hybrid_zoo.hub import client as hub
    from hybrid_zoo.models.pretrained import PretrainedWeightsMismatchError

    tag = 'convformer_tiny_late.fmnist_64'
    torch.manual_seed(1)
    published = timm.create_model(tag).eval()
    info = hub.push(published, f'{HUB_ORG}/{tag}', model_config={'label_names': list(FASHION_MNIST_CLASSES)})
    path = huggingface_hub.hf_hub_download(f'{HUB_ORG}/{tag}', 'model.safetensors', revision=info.oid)
    sha256 = factory.sha256_file(path)
    torch.manual_seed(2)
    hub.push(timm.create_model(tag).eval(), f'{HUB_ORG}/{tag}', model_config={'label_names': ['x'] * 10})
    pin(monkeypatch, tag, info.oid, sha256)
    loaders = {
        'plain': lambda cache: timm.create_model(tag, pretrained=True, cache_dir=cache),
        'checked': lambda cache: factory.load_model(tag, cache_dir=cache),
    }
    for kind, load in loaders.items():
        assert same_weights(published, load(tmp_path / kind))  # main moved on; the tag did not
    # the weights the tag was published with are not what its commit holds: refused, by both loaders, from the
    # cache (its blob name) and on the wire (the etag, before downloading)
    pin(monkeypatch, tag, info.oid, 'f' * 64)
    for kind, load in loaders.items():
        for cache in (tmp_path / kind, tmp_path / f'fresh-{kind}'):
            with pytest.raises(
                PretrainedWeightsMismatchError, match=rf'{tag} names the weights published as .*f{{64}}'
            ):
                load(cache)
    # a commit the repo does not have (rewritten history, another server): refused, naming the commit
    pin(monkeypatch, tag, '0' * 40, sha256)
    with pytest.raises(PretrainedWeightsNotFoundError, match=f'{HUB_ORG}/{tag}@{"0" * 40}'):
        factory.load_model(tag, cache_dir=tmp_path / 'other')


def test_registered_tags_are_pinned_as_published():
    """Every registered tag names the commit pretrained.json records for it, and its sha256 where recorded."""
    import json
    from pathlib import Path

    from hybrid_zoo.models.pretrained import PUBLISHED

    record = Path(__file__).parents[2] / 'model_cards' / 'results' / 'pretrained.json'
    tags = json.loads(record.read_text())['tags']
    assert set(tags) == set(PUBLISHED) == set(timm.list_pretrained('convformer_tiny*'))
    for tag, entry in tags.items():
        commit, sha256 = PUBLISHED[tag]
        assert (commit, sha256) == (entry['commit'], entry.get('sha256')), tag
        assert timm.models.get_pretrained_cfg(tag).hf_hub_id == f'{entry["repo_id"]}@{commit}'


def test_help_texts_name_only_tags_that_exist():
    """Every tag a --help text gives as an example is registered (an 'in1k' example named nothing)."""
    import importlib
    import re

    import hybrid_zoo_cli

    tags = set(timm.list_pretrained('convformer*'))
    names = tags | {t.split('.', 1)[1] for t in tags}
    for command, (module, *_) in hybrid_zoo_cli.COMMANDS.items():
        parser = importlib.import_module(f'hybrid_zoo_cli.{module}').build_parser()
        text = ' '.join(parser.format_help().split())
        for tag in re.findall(r'convformer_[a-z_]+\.[a-z0-9_]+', text) + re.findall(r"a tag \('([^']+)'\)", text):
            assert tag in names, (command, tag)
