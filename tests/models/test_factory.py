"""The model factory: one home for model creation, and one checked loader for every weights source on disk.

Hub repos go through the same loader; they are tested against the local Hub server in ``tests/hub/test_loader_checks.py``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import hybrid_zoo
from hybrid_zoo import factory

SLIM = {'widths': (32, 32, 64, 64), 'depths': (1, 1, 1, 1)}  # a convformer_tiny that builds in milliseconds


def save_folder(path: Path, arch: str = 'test_resnet', *, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A model folder as ``save_for_hf`` writes it (safetensors only)."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, **kwargs).eval()
    timm.models.save_for_hf(model, path, model_config={'label_names': ['a', 'b']}, safe_serialization=True)
    (path / 'pytorch_model.bin').unlink(missing_ok=True)
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = '\0') -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


def to_pickle_only(folder: Path, payload=None) -> None:
    torch.save(
        payload if payload is not None else load_file(folder / 'model.safetensors'), folder / 'pytorch_model.bin'
    )
    (folder / 'model.safetensors').unlink()


def test_factory_is_core_and_every_tier_uses_it():
    tree = ast.parse(Path(factory.__file__).read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or '' for n in top_level if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if n.startswith(('hybrid_zoo', 'huggingface_hub', 'safetensors'))], names
    from hybrid_zoo.benchmarks import speed_worker as speed
    from hybrid_zoo.hub import client
    from hybrid_zoo.train import evaluate
    from hybrid_zoo_config.bench import BenchConfig

    for name in ('create_model', 'load_model', 'resolve_model_source', 'model_name'):
        assert getattr(evaluate, name) is getattr(factory, name)  # the trainer imports these from evaluate
    assert evaluate.UnknownModelError is factory.UnknownModelError
    assert client.build_from_folder is factory.build_from_folder
    assert client.CorruptWeightsError is factory.CorruptWeightsError
    vit = speed._create_model('test_vit', BenchConfig(img_size=64, num_classes=3))
    assert vit.patch_embed.img_size == (64, 64) and vit.num_classes == 3


def test_loads_the_checked_safetensors_whatever_the_config_names(tmp_path):
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    torch.save(timm.create_model('test_resnet', num_classes=2).state_dict(), folder / 'other.bin')  # other weights
    config = json.loads((folder / 'config.json').read_text())
    config['pretrained_cfg'].update(hf_hub_filename='other.bin', file=str(folder / 'other.bin'), custom_load=True)
    config['pretrained_cfg']['url'] = 'http://127.0.0.1:9/other.bin'
    (folder / 'config.json').write_text(json.dumps(config))
    for loaded in (factory.load_model(folder), factory.create_model(f'local-dir:{folder}', pretrained=True)):
        assert same_weights(model, loaded)
        assert loaded.pretrained_cfg['source'] == 'local-dir' and loaded.pretrained_cfg['file'] == str(folder)
        assert 'hf_hub_filename' not in loaded.pretrained_cfg and 'url' not in loaded.pretrained_cfg


def test_pickle_only_folders_are_refused_unless_allowed(tmp_path):
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    to_pickle_only(folder)
    with pytest.raises(factory.PickleRefusedError, match=r'pytorch_model\.bin is a pickle.*allow_pickle=True'):
        factory.load_model(folder)
    assert same_weights(model, factory.load_model(folder, allow_pickle=True))
    ran = []

    class Payload:  # what a hostile pickle holds: code that runs when unpickled
        def __reduce__(self):
            return (ran.append, ('unpickling ran code',))

    save_folder(tmp_path / 'hostile', num_classes=2)
    to_pickle_only(tmp_path / 'hostile', {'x': Payload()})
    with pytest.raises(factory.PickleRefusedError, match=r'weights_only=True\) refused it'):
        factory.load_model(tmp_path / 'hostile', allow_pickle=True)
    assert ran == []


def test_overrides_adapt_the_checked_weights_as_timm_does(tmp_path):
    """A new classifier for other classes, the first conv summed for 1 channel, through the model's filter."""
    folder = tmp_path / 'model'
    model = save_folder(folder, 'convformer_tiny', num_classes=3, **SLIM)
    reference = model.state_dict()
    head = factory.load_model(folder, num_classes=7)
    assert head.get_classifier().out_features == 7
    assert all(torch.equal(v, reference[k]) for k, v in head.state_dict().items() if not k.startswith('head.fc'))
    gray = factory.load_model(folder, in_chans=1)
    conv = gray.pretrained_cfg['first_conv'] + '.weight'
    assert torch.allclose(gray.state_dict()[conv], reference[conv].sum(dim=1, keepdim=True))
    features = factory.load_model(folder, features_only=True)
    assert len(features(torch.randn(1, 3, 64, 64))) == 4
    # a training checkpoint wrapped as {'model': ...} goes through convformer_fusion.checkpoint_filter_fn
    to_pickle_only(folder, {'model': dict(reference)})
    assert same_weights(model, factory.load_model(folder, allow_pickle=True))


def nan_classifier(sd: dict) -> None:
    sd['fc.weight'] = torch.full_like(sd['fc.weight'], float('nan'))


def one_inf(sd: dict) -> None:
    sd['fc.bias'] = torch.tensor([0.0, float('inf')])


def as_int64(sd: dict) -> None:
    sd.update({k: v.long() for k, v in sd.items()})


@pytest.mark.parametrize(
    'spoil, match',
    [
        (nan_classifier, r"tensor 'fc\.weight' \(2, 96\) holds 192 NaN/inf value\(s\) of 192"),
        (one_inf, r"tensor 'fc\.bias' \(2,\) holds 1 NaN/inf"),
        (as_int64, r'\(torch\.int64 where the model has torch\.float32\).*expected floating-point weights'),
    ],
    ids=['nan', 'inf', 'int64'],
)
def test_unusable_weights_are_refused_and_named(tmp_path, spoil, match):
    folder = tmp_path / 'model'
    save_folder(folder, num_classes=2)
    sd = load_file(folder / 'model.safetensors')
    spoil(sd)
    save_file(sd, folder / 'model.safetensors')
    with pytest.raises(factory.CorruptWeightsError, match=match):
        factory.load_model(folder)


def test_half_precision_weights_load_cast(tmp_path):
    folder = tmp_path / 'model'
    model = save_folder(folder, num_classes=2)
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(folder / 'model.safetensors').items()}
    save_file(half, folder / 'model.safetensors')
    loaded = factory.load_model(folder)
    assert all(v.dtype == model.state_dict()[k].dtype for k, v in loaded.state_dict().items())


def test_names_and_sources():
    assert hybrid_zoo.MODEL_NAMES  # the plugin is registered
    with pytest.raises(factory.UnknownModelError, match=r'Did you mean: test_resnet.*import hybrid_zoo'):
        factory.create_model('test_resnt')
    with pytest.raises(factory.ModelLoadError, match='has no pretrained weights'):
        factory.create_model('convformer_tiny', pretrained=True)  # the untagged entry has no weights
    with pytest.raises(factory.ModelLoadError, match='/nonexistent/folder does not exist: expected a folder'):
        factory.load_model('local-dir:/nonexistent/folder')
    with pytest.raises(factory.ModelLoadError, match='has no config.json'):
        factory.load_model(Path(__file__).parent)
    assert factory.create_model('test_vit', img_size=48).patch_embed.img_size == (48, 48)
    assert factory.create_model('test_resnet', img_size=48).num_classes == 1000  # a size is not forced on CNNs


def test_registry_tags_keep_the_fast_failure(tmp_path, monkeypatch):
    """A tag whose weights are nowhere fails in seconds with directions, through the checked loader too."""
    import huggingface_hub.constants

    from hybrid_zoo.models.pretrained import PretrainedWeightsNotFoundError

    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(PretrainedWeightsNotFoundError, match='hybrid-zoo/convformer_tiny.fmnist_64.*HF_HUB_OFFLINE'):
        factory.load_model('convformer_tiny.fmnist_64', cache_dir=tmp_path)
