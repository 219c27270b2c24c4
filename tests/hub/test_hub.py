"""Publishing to and loading from the Hub: round trips with the real client against the local server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import RepositoryNotFoundError

from hybrid_zoo.factory import sha256_file
from hybrid_zoo.hub import client as hub
from hybrid_zoo_cli import push as push_cli

pytestmark = [
    pytest.mark.hub,
    # huggingface_hub's LFS upload hands httpx a file object as `data=`; its deprecation is not ours to fix
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

ARCH = 'convformer_tiny'
LABELS = ['t-shirt', 'trouser', 'pullover']
INPUT_SIZE = (3, 64, 64)  # small, to keep the card's GMAC count and the forward passes quick
# a slimmer convformer_tiny for the tests that need more models: same code path, recorded in model_args
SLIM = {'widths': (32, 32, 64, 64), 'depths': (1, 1, 1, 1)}


def make_run(out, arch: str = ARCH, *, seed: int = 0, num_classes: int = len(LABELS), **model_args) -> torch.nn.Module:
    """A training output folder as the trainer writes it: model/{config,weights,results,args,plot} + metrics.jsonl."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=num_classes, **model_args).eval()
    timm.models.save_for_hf(
        model,
        out / 'model',
        model_config={'label_names': LABELS[:num_classes]},
        safe_serialization=True,
        data_config={'input_size': INPUT_SIZE},
    )
    results = {
        'top1': 87.5,
        'top5': 100.0,
        'num_samples': 24,
        'dataset': 'fashion_mnist',
        'split': 'test',
        'per_class': dict(zip(LABELS, [80.0, 95.0, 87.5], strict=True)),
    }
    (out / 'model' / 'results.json').write_text(json.dumps(results))
    args = {'model': arch, 'dataset': 'fashion_mnist', 'epochs': 2, 'lr': 0.001, 'batch_size': 8}
    (out / 'model' / 'train_args.json').write_text(json.dumps(args))
    (out / 'model' / 'training_curves.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
    (out / 'metrics.jsonl').write_text('{"epoch": 0, "train_loss": 1.1}\n{"epoch": 1, "train_loss": 0.9}\n')
    return model


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa), 'weights differ'


@pytest.fixture(scope='module')
def published(tmp_path_factory, hub_server, hub_tokens):
    """One trained model pushed once to alice/convformer_tiny.test (reused by the load tests)."""
    out = tmp_path_factory.mktemp('run')
    model = make_run(out)
    repo = f'alice/{ARCH}.test'
    info = hub.push(out, repo, token=hub_tokens['alice'])
    return {'repo': repo, 'model': model, 'out': out, 'info': info}


def test_push_uploads_one_commit_in_timm_format(published, hf_token):
    api = HfApi()
    repo = published['repo']
    files = set(api.list_repo_files(repo))
    assert files == {
        '.gitattributes',
        'README.md',
        'config.json',
        'model.safetensors',
        'results.json',
        'results.yaml',
        'train_args.json',
        'train_args.yaml',
        'training_curves.png',
        'metrics.jsonl',
    }
    commits = api.list_repo_commits(repo)
    assert len(commits) == 2 and commits[0].commit_id == published['info'].oid  # initial commit + the push
    config = json.loads(open(api.hf_hub_download(repo, 'config.json')).read())
    assert config['architecture'] == ARCH and config['num_classes'] == 3 and config['label_names'] == LABELS
    assert config['pretrained_cfg']['input_size'] == list(INPUT_SIZE)
    card = ModelCard.load(repo)
    assert card.data.library_name == 'timm' and 'mid-fusion' in card.data.tags and 'transformers' not in card.data.tags
    usage = card.text.split('```python')[1]  # the first code block
    assert usage.index('import hybrid_zoo') < usage.index('timm.create_model')


def test_load_is_bit_exact(published, hf_token):
    reference = published['model']
    loaded = timm.create_model(f'hf-hub:{published["repo"]}', pretrained=True).eval()
    assert_same_weights(reference, loaded)
    x = torch.randn(2, *INPUT_SIZE)
    with torch.no_grad():
        assert torch.equal(reference(x), loaded(x))
    assert loaded.pretrained_cfg['label_names'] == LABELS


@pytest.fixture(scope='module')
def slim(tmp_path_factory, hub_server, hub_tokens):
    """A slim convformer_tiny on main of its own repo, for tests that build several models."""
    out = tmp_path_factory.mktemp('slim')
    model = make_run(out, **SLIM)
    repo = f'alice/{ARCH}.slim'
    hub.push(out, repo, token=hub_tokens['alice'])
    return {'repo': repo, 'model': model}


def test_load_overrides(slim, hf_token):
    name = f'hf-hub:{slim["repo"]}'
    reference = slim['model'].state_dict()
    head = timm.create_model(name, pretrained=True, num_classes=7)
    assert head.get_classifier().out_features == 7
    assert all(torch.equal(v, reference[k]) for k, v in head.state_dict().items() if not k.startswith('head.fc'))
    gray = timm.create_model(name, pretrained=True, in_chans=1)
    first_conv = gray.pretrained_cfg['first_conv'] + '.weight'
    assert gray.state_dict()[first_conv].shape[1] == 1
    assert torch.allclose(gray.state_dict()[first_conv], reference[first_conv].sum(dim=1, keepdim=True))
    features = timm.create_model(name, pretrained=True, features_only=True)
    maps = features(torch.randn(1, *INPUT_SIZE))
    assert [m.shape[-1] for m in maps] == [INPUT_SIZE[-1] // s for s in features.feature_info.reduction()]


def test_registry_tag_resolves_through_hf_hub_id(published, hf_token, monkeypatch):
    from timm.models import _registry

    # what a published weight adds to the variant table: 'convformer_tiny.<tag>' with an hf_hub_id
    cfg = timm.models.get_pretrained_cfg(ARCH)
    cfg.hf_hub_id, cfg.tag, cfg.num_classes = published['repo'], 'hubtest', 3
    monkeypatch.setitem(_registry._model_pretrained_cfgs, f'{ARCH}.hubtest', cfg)
    assert_same_weights(published['model'], timm.create_model(f'{ARCH}.hubtest', pretrained=True, num_classes=3))
    overlay = {'hf_hub_id': published['repo'], 'num_classes': 3}  # the same without registering a tag
    assert_same_weights(published['model'], hub.load(ARCH, num_classes=3, pretrained_cfg_overlay=overlay))


def test_push_to_branch_and_load_at_branch(slim, hf_token, tmp_path):
    repo = slim['repo']
    second = make_run(tmp_path, seed=1, **SLIM)
    info = hub.push(tmp_path / 'model', repo, revision='exp', commit_message='second run')
    refs = {b.name: b.target_commit for b in HfApi().list_repo_refs(repo).branches}
    assert refs['exp'] == info.oid and refs['main'] != info.oid
    assert_same_weights(second, timm.create_model(f'hf-hub:{repo}@exp', pretrained=True))
    assert_same_weights(slim['model'], hub.load(f'{repo}@main'))


def test_unchanged_push_creates_no_commit(published, hf_token):
    api = HfApi()
    before = api.list_repo_commits(published['repo'])
    info = hub.push(published['out'], published['repo'])
    assert info.oid == before[0].commit_id
    assert [c.commit_id for c in api.list_repo_commits(published['repo'])] == [c.commit_id for c in before]


def test_push_in_memory_model_private_and_pr(hub_server, hf_token, hub_tokens, tmp_path):
    model = timm.create_model('test_resnet', num_classes=2).eval()
    repo = 'zoo/test_resnet.private'  # an org namespace alice may write to
    hub.push(
        model,
        repo,
        private=True,
        model_config={'label_names': ['a', 'b']},
        results={'top1': 50.0, 'dataset': 'toy', 'split': 'val'},
        train_args={'epochs': 1},
    )
    assert_same_weights(model, timm.create_model(f'hf-hub:{repo}', pretrained=True))
    bob = HfApi(token=hub_tokens['bob'])
    with pytest.raises(RepositoryNotFoundError):
        bob.model_info(repo)
    with pytest.raises(RepositoryNotFoundError):
        # a cache of bob's own: the client would fall back on files alice already downloaded into a shared one
        bob.hf_hub_download(repo, 'model.safetensors', cache_dir=tmp_path / 'bob-cache')

    pr = hub.push(
        timm.create_model('test_resnet', num_classes=2), repo, create_pr=True, model_config={'label_names': ['a', 'b']}
    )
    assert pr.pr_url and pr.pr_url.endswith('/discussions/1')
    assert_same_weights(model, timm.create_model(f'hf-hub:{repo}', pretrained=True))  # main is unchanged


def test_dataset_round_trip(hub_server, hf_token):
    import datasets

    datasets.disable_progress_bars()
    rng = np.random.default_rng(0)
    features = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=LABELS)})

    def split(n: int) -> datasets.Dataset:
        images = [rng.integers(0, 255, (8, 8), dtype=np.uint8) for _ in range(n)]
        return datasets.Dataset.from_dict({'image': images, 'label': [i % 3 for i in range(n)]}, features=features)

    original = datasets.DatasetDict(train=split(6), test=split(3))
    original.push_to_hub('alice/tiny-fashion')
    loaded = datasets.load_dataset('alice/tiny-fashion')
    assert loaded['train'].features == features and loaded['test'].features == features
    assert loaded['train'].features['label'].names == LABELS
    assert loaded['test']['label'] == original['test']['label']
    assert all(
        np.array_equal(np.asarray(a['image']), np.asarray(b['image']))
        for a, b in zip(loaded['train'], original['train'], strict=True)
    )


def test_cli_push_and_dry_run(tmp_path, hub_server, hf_token, capsys):
    make_run(tmp_path, arch='test_resnet')
    assert push_cli.main([str(tmp_path), 'alice/cli-demo', '--dry-run']) == 0
    listing = capsys.readouterr().out
    assert 'model.safetensors' in listing and 'README.md' in listing and 'pytorch_model.bin' not in listing
    assert not HfApi().repo_exists('alice/cli-demo')
    assert push_cli.main([str(tmp_path), 'alice/cli-demo', '--revision', 'v1', '--commit-message', 'from the CLI']) == 0
    assert '/alice/cli-demo/commit/' in capsys.readouterr().out
    assert HfApi().list_repo_commits('alice/cli-demo', revision='v1')[0].title == 'from the CLI'


def test_push_publishes_no_local_paths(tmp_path, hub_server, hf_token):
    """L15: a run records absolute paths (dataset, output_dir, a --pretrained folder); what is published has none."""
    run = tmp_path / 'run'
    make_run(run, arch='test_resnet')
    local = {
        'dataset': str(tmp_path / 'data' / 'fmnist'),
        'output_dir': str(run),
        'pretrained': f'local-dir:{tmp_path}/base/model',
        'embedded_cache': '~/.cache/hybrid_zoo',
    }
    args = json.loads((run / 'model' / 'train_args.json').read_text()) | local
    (run / 'model' / 'train_args.json').write_text(json.dumps(args))
    results = json.loads((run / 'model' / 'results.json').read_text()) | {'dataset': local['dataset']}
    (run / 'model' / 'results.json').write_text(json.dumps(results))
    with (run / 'metrics.jsonl').open('a') as f:
        f.write(json.dumps({'epoch': 2, 'checkpoint': str(run / 'checkpoints' / 'last')}) + '\n')
    before = {p: p.read_bytes() for p in run.rglob('*') if p.is_file()}
    hub.push(run, 'alice/no-paths')
    download = HfApi().snapshot_download('alice/no-paths', local_dir=tmp_path / 'download')
    published = {
        p.name: p.read_bytes() for p in (tmp_path / 'download').rglob('*') if p.is_file() and '.cache' not in p.parts
    }
    assert {'README.md', 'train_args.json', 'train_args.yaml', 'results.yaml', 'metrics.jsonl'} <= published.keys()
    for name, data in published.items():
        assert str(tmp_path).encode() not in data and b'~/.cache' not in data, (name, download)
    assert json.loads(published['train_args.json'])['dataset'] == '<local>/fmnist'
    assert json.loads(published['train_args.json'])['pretrained'] == 'local-dir:<local>/model'
    assert '| `output_dir` | <local>/run |' in published['README.md'].decode()
    assert 'datasets:' not in published['README.md'].decode().split('---')[1]  # a local folder is no Hub dataset
    assert {p: p.read_bytes() for p in run.rglob('*') if p.is_file()} == before  # the local files keep their paths


def pin(monkeypatch, tag: str, commit: str, sha256: str) -> None:
    """Register ``tag`` as published at ``commit`` with ``sha256`` (what ``compare --publish`` records)."""
    import dataclasses

    from timm.models import _registry

    from hybrid_zoo.models import pretrained

    monkeypatch.setitem(pretrained.PUBLISHED, tag, (commit, sha256))
    cfg = timm.models.get_pretrained_cfg(tag)
    hf_hub_id = f'{pretrained.HUB_ORG}/{tag}@{commit}'
    monkeypatch.setitem(_registry._model_pretrained_cfgs, tag, dataclasses.replace(cfg, hf_hub_id=hf_hub_id))


def test_registered_fmnist_tag_loads_from_project_namespace(tmp_path, hub_server, hf_token, monkeypatch):
    """The pretrained tag a comparison publishes: pushed to the project's org, loaded by its timm name."""
    from hybrid_zoo.models.pretrained import FASHION_MNIST_CLASSES, HUB_ORG

    tag = 'convformer_tiny_late.fmnist_64'
    torch.manual_seed(3)
    model = timm.create_model(tag).eval()  # the tag's own cfg: 1 channel, 10 classes
    timm.models.save_for_hf(
        model,
        tmp_path / 'model',
        model_config={'label_names': list(FASHION_MNIST_CLASSES)},
        safe_serialization=True,
        data_config={'input_size': (1, 64, 64)},
    )
    info = hub.push(tmp_path, f'{HUB_ORG}/{tag}')
    pin(monkeypatch, tag, info.oid, sha256_file(tmp_path / 'model' / 'model.safetensors'))  # what a publish records
    loaded = timm.create_model(tag, pretrained=True).eval()
    assert_same_weights(model, loaded)
    assert loaded.pretrained_cfg['label_names'] == FASHION_MNIST_CLASSES
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_compare_publishes_each_models_best_run(tmp_path, hub_server, hf_token):
    """`hybrid-zoo compare --publish`: the best 64 px run of each model, not a design variant's, goes to its tag."""
    from hybrid_zoo.benchmarks.compare import publish
    from hybrid_zoo.models.pretrained import FMNIST_MODELS, HUB_ORG
    from hybrid_zoo.models.variants import ARCH_VERSION

    def results(name, img_size, runs, variant=None):
        path = tmp_path / f'fmnist-{name}.json'
        path.write_text(json.dumps({'recipe': {'img_size': img_size}, 'variant': variant, 'runs': runs}))
        return path

    def run(model, seed, top1):
        out = tmp_path / 'runs' / f'{model}-{seed}-{top1}'
        weights = make_run(out, model, seed=seed, **SLIM)
        row = {'model': model, 'seed': seed, 'recipe': 'r', 'test_top1': top1, 'test_top5': 99.0, 'val_top1': top1}
        row['architecture_version'] = ARCH_VERSION  # a run of the registered architecture
        return dict(row, model_dir=str(out / 'model')), weights

    rows, winners = [], {}
    for i, model in enumerate(FMNIST_MODELS):
        (low, _), (high, w) = run(model, 0, 70.0 + i), run(model, 1, 80.0 + i)
        rows += [low, high]
        winners[model] = w
    bigger_variant, _ = run(FMNIST_MODELS[0], 2, 99.0)  # better, but a design variant: never published
    other_size, _ = run(FMNIST_MODELS[1], 3, 99.5)  # better, but at another resolution than the tag's
    no_weights = dict(run(FMNIST_MODELS[2], 4, 99.9)[0], model_dir=None)  # a GPU-protocol row: nothing to publish
    files = [results('a', 64, rows), results('a-x', 64, [bigger_variant], 'x'), results('b', 32, [other_size])]
    files.append(results('gpu', 64, [no_weights]))
    record = tmp_path / 'pretrained.json'
    published = publish(files, record=record)
    assert set(published) == {f'{m}.fmnist_64' for m in FMNIST_MODELS}
    for model, w in winners.items():
        entry = published[f'{model}.fmnist_64']
        assert entry['repo_id'] == f'{HUB_ORG}/{model}.fmnist_64' and entry['seed'] == 1
        # the tag is pinned to this commit and these bytes: both are recorded
        weights = HfApi().hf_hub_download(entry['repo_id'], 'model.safetensors', revision=entry['commit'])
        assert entry['sha256'] == sha256_file(weights)
        assert_same_weights(w, hub.load(f'hf-hub:{entry["repo_id"]}'))
    assert json.loads(record.read_text())['tags'] == published
    with pytest.raises(FileNotFoundError, match='no finished 64 px run'):
        publish(files[1:], record=None)


def test_the_cards_load_call_works_after_import_hybrid_zoo():
    """`hybrid_zoo.hub.load(...)`, as the model card prints it, after a plain `import hybrid_zoo`; the import itself
    still loads no tier."""
    import subprocess
    import sys

    code = (
        'import sys, hybrid_zoo; assert "hybrid_zoo.hub" not in sys.modules; '
        'print(hybrid_zoo.hub.load.__module__, hybrid_zoo.train.__name__)'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ['hybrid_zoo.hub.client', 'hybrid_zoo.train']
    template = (Path(hub.__file__).parent / 'templates' / 'model_card.md').read_text()
    assert "hybrid_zoo.hub.load('{{ repo_id }}')" in template
