"""One checked loader behind every entry point, against the local Hub server: every Python function and every
``hybrid-zoo`` command that can be pointed at weights (enumerated below; a new command fails the test until it is
classified) refuses a pickle-only folder or repo and a ``config.json`` that names another weights file; only the
verified ``model.safetensors`` is ever loaded, and unusable weights are refused by name, at push and at load."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import timm
import torch
from huggingface_hub import HfApi
from safetensors.torch import load_file, save_file

import hybrid_zoo_cli
from hybrid_zoo import factory
from hybrid_zoo.hub import client as hub
from hybrid_zoo.train import data, evaluate
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


# ---- every entry point ------------------------------------------------------------------------------------------------
# hybrid-zoo commands a user can point at weights (a folder, a repo, a name): each is fed the hostile sources below
WEIGHT_COMMANDS = ('eval', 'train', 'export', 'push', 'describe')
# the others, and why no user-named weights reach them
NO_WEIGHT_COMMANDS = {
    'demo': 'trains its own model; loads back only what it pushed to its own throwaway server',
    'prepare-data': 'writes datasets',
    'compare': 'trains registered architectures; a continued recipe starts from its own runs through train',
    'hub-server': 'serves files, loads none',
    'stats': 'counts registered architectures, untrained',
    'bench': 'times untrained models',
    'profile': 'profiles untrained models',
    'render-docs': 'renders result files',
    'front': 'reads results files',
}


def test_every_command_is_classified():
    assert set(hybrid_zoo_cli.COMMANDS) == set(WEIGHT_COMMANDS) | set(NO_WEIGHT_COMMANDS)


def _timm_create_model_names(tree: ast.Module) -> set[str]:
    """The names under which a module calls timm's own ``create_model`` (aliases of its imports included)."""
    names = {'timm.create_model', 'timm.models.create_model', 'timm.models._factory.create_model'}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'timm':
            names |= {a.asname or a.name for a in node.names if a.name == 'create_model'}
        elif isinstance(node, ast.Import):
            names |= {f'{a.asname}.create_model' for a in node.names if a.name == 'timm' and a.asname}
    return names


def test_no_module_loads_weights_past_the_checked_loader():
    """Outside factory.py nothing in the package, its command line or its tools asks timm for pretrained weights
    (under any name it imports timm's create_model as) or unpickles a file."""
    repo = Path(factory.__file__).parents[1]
    files = [
        p for d in ('hybrid_zoo', 'hybrid_zoo_cli', 'hybrid_zoo_config', 'tools') for p in (repo / d).rglob('*.py')
    ]
    offenders = []
    for path in sorted(files):
        if path == Path(factory.__file__):
            continue
        tree = ast.parse(path.read_text())
        timm_names = _timm_create_model_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            call = ast.unparse(node.func)
            pretrained = [k for k in node.keywords if k.arg == 'pretrained']
            loads = call.endswith(('torch.load', 'load_checkpoint', 'load_pretrained', 'load_state_dict_from_hf'))
            if loads or (call in timm_names and pretrained and ast.unparse(pretrained[0].value) != 'False'):
                offenders.append(f'{path.relative_to(repo)}:{node.lineno}: {ast.unparse(node)[:80]}')
    assert not offenders, offenders


def test_the_scan_sees_timm_under_any_name_it_is_imported_as():
    tree = ast.parse('from timm import create_model as cm\nimport timm as t\nfrom timm.models import create_model\n')
    assert {'cm', 't.create_model', 'create_model', 'timm.create_model'} <= _timm_create_model_names(tree)
    assert 'create_model' not in _timm_create_model_names(ast.parse('from hybrid_zoo.factory import create_model'))


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return str(path)


@pytest.fixture(scope='module')
def hostile(tmp_path_factory, hub_server, hub_tokens):
    """{kind: (folder, 'hf-hub:' repo)}: a pickle-only model, and a config naming another file beside safetensors."""
    root = tmp_path_factory.mktemp('hostile')
    folders = {'pickle-only': root / 'pickle-only', 'redirect': root / 'redirect'}
    model = make_folder(folders['pickle-only'])
    torch.save(model.state_dict(), folders['pickle-only'] / 'pytorch_model.bin')
    (folders['pickle-only'] / 'model.safetensors').unlink()
    make_folder(folders['redirect'])
    torch.save(timm.create_model(ARCH, num_classes=2).state_dict(), folders['redirect'] / 'other.bin')
    config = json.loads((folders['redirect'] / 'config.json').read_text())
    config['pretrained_cfg']['hf_hub_filename'] = 'other.bin'
    (folders['redirect'] / 'config.json').write_text(json.dumps(config))
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('HF_TOKEN', hub_tokens['alice'])
        for kind, folder in folders.items():
            repo = f'alice/hostile-{kind}'
            upload(repo, {p.name: p for p in folder.iterdir()})
            out[kind] = (str(folder), f'hf-hub:{repo}')
    return out


REFUSALS = {'pickle-only': r'pytorch_model\.bin', 'redirect': r'hf_hub_filename'}


def python_entry_points(source: str, digits: str, tmp_path: Path) -> dict:
    """Every library function that loads weights, as a user calls it with ``source`` (a folder or a repo id)."""
    name = source if source.startswith('hf-hub:') else f'local-dir:{source}'
    run = TrainConfig(model=ARCH, pretrained=source, dataset=digits, output_dir=str(tmp_path / 'run'))
    points = {
        'factory.create_model': lambda: factory.create_model(name, pretrained=True),
        'factory.load_model': lambda: factory.load_model(source),
        'hub.load': lambda: hub.load(source),
        'evaluate.load_model': lambda: evaluate.load_model(source),
        'evaluate.evaluate': lambda: evaluate.evaluate(source, digits, 'test', max_samples=8, cpu=True),
        'train build_model (--pretrained)': lambda: build_model(run, num_classes=2),
    }
    if not source.startswith('hf-hub:'):  # a push takes a local folder
        points['hub.check_folder'] = lambda: hub.check_folder(source)
        points['hub.push'] = lambda: hub.push(source, 'alice/never')
    return points


def cli_entry_points(source: str, digits: str, tmp_path: Path) -> dict[str, list[str]]:
    """Every command of ``WEIGHT_COMMANDS`` pointed at ``source``."""
    name = source if source.startswith('hf-hub:') else f'local-dir:{source}'
    tiny = ['--dataset', digits, '--workers', '0']
    points = {
        'eval': ['eval', '--model', source, *tiny, '--max-samples', '8', '--cpu'],
        'train': ['train', '--model', ARCH, '--pretrained', source, *tiny, '--epochs', '1', '--max-train-samples', '16']
        + ['--max-val-samples', '16', '--img-size', '32', '--output-dir', str(tmp_path / 'train')],
        'export': ['export', '--model', name, '--pretrained', '--output', str(tmp_path / 'm.onnx')],
        'describe': ['describe', name],
    }
    if not source.startswith('hf-hub:'):
        points['push'] = ['push', source, 'alice/never', '--dry-run']
    return points


@pytest.mark.parametrize('where', ['folder', 'repo'])
@pytest.mark.parametrize('kind', ['pickle-only', 'redirect'])
def test_every_entry_point_refuses_hostile_weights(
    kind, where, hostile, digits, tmp_path, hf_token, hub_server, capfd, caplog
):
    source = hostile[kind][where == 'repo']
    start = len(hub_server.requests)
    for entry, load in python_entry_points(source, digits, tmp_path).items():
        with pytest.raises(factory.ModelLoadError, match=REFUSALS[kind]):
            load()
        assert entry  # the entry point's name shows in a failure's traceback
    capfd.readouterr()
    for command, argv in cli_entry_points(source, digits, tmp_path).items():
        caplog.clear()
        assert hybrid_zoo_cli.main(argv) == 2, command
        err = capfd.readouterr().err + caplog.text  # the commands log their errors; pytest captures the log
        assert 'Traceback' not in err, (command, err)
        if command != 'describe':  # describe takes registered names only: it says so
            assert any(m in err for m in ('pytorch_model.bin', 'hf_hub_filename')), (command, err)
    fetched = [p for m, p in list(hub_server.requests)[start:] if m == 'GET' and p.endswith(('.bin', '.pth'))]
    assert not fetched  # looked at (HEAD), never downloaded
    assert not (tmp_path / 'm.onnx').exists() and not (tmp_path / 'train' / 'model').exists()


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
