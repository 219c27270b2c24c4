"""One checked loader behind every entry point (``hub.load``, ``hybrid-zoo eval``, ``train --pretrained``), against
the local Hub server: only the verified ``model.safetensors`` is loaded, pickles are refused unless asked, and
unusable weights are refused by name, at push and at load."""

from __future__ import annotations

import json
import os

import pytest
import timm
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

from hybrid_zoo import factory
from hybrid_zoo.hub import client as hub
from hybrid_zoo.train import evaluate
from hybrid_zoo.train.loop import TrainConfig, build_model

pytestmark = [
    pytest.mark.hub,
    # huggingface_hub's LFS upload hands httpx a file object as `data=`; its deprecation is not ours to fix
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

ARCH = 'test_resnet'  # timm's smallest model: these tests are about which file is loaded


def make_folder(path, *, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(ARCH, num_classes=2).eval()
    timm.models.save_for_hf(model, path, model_config={'label_names': ['a', 'b']}, safe_serialization=True)
    (path / 'pytorch_model.bin').unlink(missing_ok=True)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def upload(repo: str, files: dict) -> None:
    """Files committed straight through the API: a hostile or careless uploader, not ``hub.push``."""
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    for name, source in files.items():
        api.upload_file(path_or_fileobj=source, path_in_repo=name, repo_id=repo)


def loaders(name: str):
    """Every entry point that loads pretrained weights by name, as the user reaches it (a folder, or its id)."""
    prefixed = f'local-dir:{name}' if os.path.isdir(name) else name  # create_model takes names only, never a path
    return {
        'hub.load': lambda **kw: hub.load(name, **kw),
        'evaluate.load_model': lambda **kw: evaluate.load_model(name, **kw),
        'create_model(pretrained=True)': lambda **kw: factory.create_model(prefixed, pretrained=True, **kw),
    }


def test_a_config_cannot_point_the_loader_at_another_file(tmp_path, hub_server, hf_token):
    """H2: config.json names a pickle of other weights (hf_hub_filename, file, url); model.safetensors is loaded."""
    model = make_folder(tmp_path)
    torch.save(timm.create_model(ARCH, num_classes=2).state_dict(), tmp_path / 'other.bin')
    config = json.loads((tmp_path / 'config.json').read_text())
    config['pretrained_cfg'].update(hf_hub_filename='other.bin', file='other.bin', url='http://127.0.0.1:9/other.bin')
    repo = 'alice/redirect'
    upload(repo, {'config.json': json.dumps(config).encode(), 'model.safetensors': tmp_path / 'model.safetensors'})
    upload(repo, {'other.bin': tmp_path / 'other.bin'})
    start = len(hub_server.requests)
    for entry, load in loaders(f'hf-hub:{repo}').items():
        loaded = load()
        assert same_weights(model, loaded), entry
        assert loaded.pretrained_cfg['hf_hub_id'] == repo and loaded.pretrained_cfg['source'] == 'hf-hub'
        assert not {'hf_hub_filename', 'file', 'url'} & loaded.pretrained_cfg.keys(), entry
    assert not [p for _, p in list(hub_server.requests)[start:] if p.endswith('other.bin')]  # never even fetched


def test_pickle_only_repos_and_folders_are_refused_by_every_entry_point(tmp_path, hub_server, hf_token):
    """M8: eval, load_model and train --pretrained refuse what hub.load refuses, before unpickling anything."""
    model = make_folder(tmp_path / 'model')
    torch.save(model.state_dict(), tmp_path / 'model' / 'pytorch_model.bin')
    (tmp_path / 'model' / 'model.safetensors').unlink()
    repo = 'alice/bin-only'
    upload(repo, {name: tmp_path / 'model' / name for name in ('config.json', 'pytorch_model.bin')})
    for source in (f'hf-hub:{repo}', str(tmp_path / 'model')):
        for load in loaders(source).values():
            with pytest.raises(hub.PickleRefusedError, match=r'pytorch_model\.bin is a pickle.*allow_pickle=True'):
                load()
        cfg = TrainConfig(model=ARCH, pretrained=source, dataset='unused', output_dir=str(tmp_path / 'run'))
        with pytest.raises(hub.PickleRefusedError, match='weights_only=True'):
            build_model(cfg, num_classes=2)  # what `hybrid-zoo train --pretrained <source>` builds
        assert same_weights(model, evaluate.load_model(source, allow_pickle=True))


def test_registry_tags_go_through_the_same_checks(tmp_path, hub_server, hf_token, monkeypatch):
    from timm.models import _registry

    model = make_folder(tmp_path / 'good')
    upload('alice/tag-good', {'model.safetensors': tmp_path / 'good' / 'model.safetensors'})
    torch.save(model.state_dict(), tmp_path / 'pytorch_model.bin')
    upload('alice/tag-bin', {'pytorch_model.bin': tmp_path / 'pytorch_model.bin'})

    def register(tag: str, **fields) -> str:  # what a published weight adds to a model's cfg table
        cfg = timm.models.get_pretrained_cfg(ARCH)
        cfg = type(cfg)(**{**cfg.__dict__, 'tag': tag, 'num_classes': 2, **fields})
        monkeypatch.setitem(_registry._model_pretrained_cfgs, f'{ARCH}.{tag}', cfg)
        return f'{ARCH}.{tag}'

    assert same_weights(model, evaluate.load_model(register('good', hf_hub_id='alice/tag-good')))
    # a registry cfg naming a pickle still gets the safetensors beside it, never the pickle
    named_pickle = register('named', hf_hub_id='alice/tag-good', hf_hub_filename='pytorch_model.bin')
    assert same_weights(model, hub.load(named_pickle))
    with pytest.raises(hub.PickleRefusedError, match=r'alice/tag-bin@main:pytorch_model\.bin is a pickle'):
        evaluate.load_model(register('bin', hf_hub_id='alice/tag-bin'))


def test_unusable_weights_are_refused_at_push_and_at_load(tmp_path, hub_server, hf_token):
    """L6: NaN and int64 weights with the right shapes; fp16 is a storage choice and loads cast to fp32."""
    folder = tmp_path / 'model'
    model = make_folder(folder)
    good = load_file(folder / 'model.safetensors')
    start = len(hub_server.requests)
    for spoilt, match in (
        ({**good, 'fc.weight': torch.full_like(good['fc.weight'], float('nan'))}, r"tensor 'fc\.weight'.*NaN/inf"),
        (
            {k: v.long() for k, v in good.items()},
            r'bn1\.bias \(torch\.int64 where the model has torch\.float32\).* and 74 more',
        ),
    ):
        save_file(spoilt, folder / 'model.safetensors')
        with pytest.raises(hub.CorruptWeightsError, match=match):
            hub.push(folder, 'alice/spoilt')
        assert list(hub_server.requests)[start:] == []  # refused before any network call
        repo = f'alice/spoilt-{spoilt["conv1.0.weight"].dtype}'.replace('torch.', '')
        upload(repo, {name: folder / name for name in ('config.json', 'model.safetensors')})
        with pytest.raises(hub.CorruptWeightsError, match=rf'{repo}@main:model\.safetensors.*{match}'):
            hub.load(repo)
        start = len(hub_server.requests)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in good.items()}, folder / 'model.safetensors')
    hub.push(folder, 'alice/half')
    loaded = hub.load('alice/half')
    assert loaded.fc.weight.dtype == torch.float32
    assert torch.allclose(loaded.fc.weight, model.fc.weight, atol=1e-3)
