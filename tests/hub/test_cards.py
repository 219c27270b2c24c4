"""Model cards: YAML the Hub understands, a body that reads on its own, every number from a result file."""

from __future__ import annotations

import json

import pytest
import timm
import yaml

import hybrid_zoo
from hybrid_zoo.hub import cards

FUSION = {'convformer_tiny_early': 'early', 'convformer_tiny': 'mid', 'convformer_tiny_late': 'late'}


def header(card) -> dict:
    return yaml.safe_load(str(card).split('---')[1])


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A trained-model folder with distinctive numbers, so the test can find each one in the card."""
    folder = tmp_path_factory.mktemp('trained') / 'model'
    model = timm.create_model(
        'convformer_tiny', num_classes=3, in_chans=1, widths=(32, 32, 64, 64), depths=(1, 1, 1, 1)
    )
    labels = ['cat', 'dog', 'owl']
    timm.models.save_for_hf(
        model,
        folder,
        model_config={'label_names': labels},
        safe_serialization=True,
        data_config={'input_size': (1, 48, 48)},
    )
    results = {
        'top1': 87.654,
        'top5': 99.125,
        'num_samples': 4321,
        'dataset': 'fashion_mnist',
        'split': 'test',
        'per_class': {'cat': 81.25, 'dog': 93.75, 'owl': 88.5},
    }
    args = {
        'model': 'convformer_tiny',
        'dataset': 'fashion_mnist',
        'epochs': 7,
        'lr': 0.00123,
        'batch_size': 96,
        'opt': 'adamw',
        'weight_decay': 0.05,
    }
    (folder / 'results.json').write_text(json.dumps(results))
    (folder / 'train_args.json').write_text(json.dumps(args))
    (folder / 'training_curves.png').write_bytes(b'\x89PNG')
    return folder, model, results, args


def test_trained_card_yaml(trained):
    folder, _, results, _ = trained
    data = header(
        cards.render_card(folder, repo_id='zoo/convformer_tiny.fmnist', base_model='zoo/convformer_tiny.in1k')
    )
    assert data['library_name'] == 'timm' and data['pipeline_tag'] == 'image-classification'
    assert data['license'] == 'apache-2.0'
    assert set(data['tags']) == {'image-classification', 'timm', 'hybrid_zoo', 'mid-fusion'}  # and no 'transformers'
    assert data['datasets'] == ['zalando-datasets/fashion_mnist']
    assert data['base_model'] == 'zoo/convformer_tiny.in1k'
    (entry,) = data['model-index']
    assert entry['name'] == 'zoo/convformer_tiny.fmnist'
    metrics = {m['name']: m['value'] for r in entry['results'] for m in r['metrics']}
    assert metrics == {'Top-1 accuracy': results['top1'], 'Top-5 accuracy': results['top5']}
    assert entry['results'][0]['dataset']['split'] == 'test'


def test_validation_accuracy_is_never_a_model_index_score(trained):
    folder, _, results, _ = trained
    carved = 'validation carved from train, 10%, stratified, seed 42'
    (folder / 'results.json').write_text(json.dumps(dict(results, split='train[val]', val_source=carved)))
    card = cards.render_card(folder, repo_id='zoo/convformer_tiny.fmnist')
    assert 'model-index' not in header(card)  # the rows that chose the checkpoint give no published score
    assert f'% validation top-1** (4,321 images) on {carved}' in str(card) and 'not a held-out test score' in str(card)


def test_trained_card_body_reads_on_its_own(trained):
    folder, model, results, args = trained
    text = str(cards.render_card(folder, repo_id='zoo/convformer_tiny.fmnist'))
    # the card says how to get the package its usage needs, before the usage
    assert text.index('pip install "hybrid_zoo[hub]') < text.index('```python') and 'registers' in text
    usage = text.split('```python')[1]
    assert usage.index('import hybrid_zoo') < usage.index("timm.create_model('hf-hub:zoo/convformer_tiny.fmnist'")
    assert ".convert('L')" in usage  # a grayscale model gets grayscale images
    for heading in (
        '## How to use',
        '## Input and output',
        '## Model stats',
        '## Training',
        '## Results',
        '## Plots',
        '## Citation',
    ):
        assert heading in text
    # numbers come from the files and from measuring the model, formatted the same way
    for value in (
        results['top1'],
        results['top5'],
        results['num_samples'],
        args['epochs'],
        args['lr'],
        args['batch_size'],
        81.25,
    ):
        assert cards.fmt(value) in text
    assert f'| params (M) | {cards.fmt(sum(p.numel() for p in model.parameters()) / 1e6)} |' in text
    assert (
        '| feature strides | 4, 8, 16, 32 |' in text and '(B, 1, 48, 48)' in text and '0: cat, 1: dog, 2: owl' in text
    )
    assert '![Training curves](training_curves.png)' in text and 'confusion_matrix.png' not in text
    assert 'attention in every second block of stages 3-4' in text and '@misc{hybrid_zoo' in text
    assert 'mid fusion (a custom architecture)' in text  # its widths are not a registered variant's


def test_card_without_results_or_args(trained, tmp_path):
    folder = tmp_path / 'bare'
    folder.mkdir()
    for name in ('config.json', 'model.safetensors'):
        (folder / name).write_bytes((trained[0] / name).read_bytes())
    card = cards.render_card(folder, repo_id='zoo/bare')
    data = header(card)
    assert 'model-index' not in data and 'datasets' not in data
    assert '## Results' not in str(card) and '## Training' not in str(card) and '## Plots' not in str(card)


@pytest.mark.parametrize(
    'text, public',
    [
        ('/home/ana/data/fmnist', '<local>/fmnist'),
        ('/home/ana/runs/x/', '<local>/x'),
        ('~/.cache/hybrid_zoo', '<local>/hybrid_zoo'),
        ('local-dir:/home/ana/runs/x/model', 'local-dir:<local>/model'),
        (r'C:\Users\ana\data', '<local>/data'),
        ('{"dataset": "/srv/d", "lr": 0.1}', '{"dataset": "<local>/d", "lr": 0.1}'),
        ('<local>/fmnist', '<local>/fmnist'),  # twice is once
        # kept: Hub ids, URLs, relative names, labels and fractions with a slash
        ('zalando-datasets/fashion_mnist', 'zalando-datasets/fashion_mnist'),
        ('hf-hub:org/convformer_tiny.fmnist', 'hf-hub:org/convformer_tiny.fmnist'),
        ('https://huggingface.co/org/x/resolve/main/a.png', 'https://huggingface.co/org/x/resolve/main/a.png'),
        ('data/fmnist', 'data/fmnist'),
        ('T-shirt/top', 'T-shirt/top'),
        ('top-1 / top-5, 1/2', 'top-1 / top-5, 1/2'),
    ],
)
def test_local_paths_are_redacted(text, public):
    assert cards.redact_local_paths(text) == public
    assert cards.redact_local_paths({'a': [text, 3], 'b': None}) == {'a': [public, 3], 'b': None}


def test_card_shows_no_local_paths(trained, tmp_path):
    """L15: a run records where its data and outputs were; the card keeps only their last part."""
    folder = tmp_path / 'model'
    folder.mkdir()
    for path in trained[0].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    args = dict(trained[3], dataset=str(tmp_path / 'data' / 'digits'), output_dir=str(tmp_path))
    (folder / 'train_args.json').write_text(json.dumps(args))
    results = dict(trained[2], dataset=args['dataset'])
    (folder / 'results.json').write_text(json.dumps(results))
    card = str(cards.render_card(folder, repo_id='zoo/x'))
    assert str(tmp_path) not in card
    assert '**<local>/digits**' in card and f'| `output_dir` | <local>/{tmp_path.name} |' in card
    data = header(card)
    assert 'datasets' not in data  # a local folder is no Hub dataset
    assert data['model-index'][0]['results'][0]['dataset']['name'] == '<local>/digits'


def _stats(names):
    return {
        'meta': {
            'torch': '2.14.1',
            'timm': '1.0.31',
            'date': '2026-01-01',
            'machine': 'test',
            'input_size': [3, 224, 224],
        },
        'models': {
            name: {
                'params_m': 10.0 + i,
                'gmacs': 2.0 + i / 10,
                'attention_gmacs': 0.1 * i,
                'fusion': FUSION.get(name, 'mid'),
                'size': 'tiny',
                'attention_stages': [3, 4],
                'depths': [2, 2, 8, 2],
                'widths': [64, 128, 256, 384],
                'feature_strides': [4, 8, 16, 32],
                'num_features': 384,
                'input_size': [3, 224, 224],
            }
            for i, name in enumerate(names)
        },
    }


def test_architecture_cards_for_all_nine(tmp_path):
    stats_file = tmp_path / 'results' / 'model_stats.json'
    stats_file.parent.mkdir()
    stats = _stats(hybrid_zoo.MODEL_NAMES)
    stats_file.write_text(json.dumps(stats))
    written = cards.render_architecture_cards(stats_file, tmp_path / 'cards')
    assert [p.stem for p in written] == list(hybrid_zoo.MODEL_NAMES)
    for path in written:
        text = path.read_text()
        entry = stats['models'][path.stem]
        data = header(text)
        assert (
            data['library_name'] == 'timm' and f'{entry["fusion"]}-fusion' in data['tags'] and 'model-index' not in data
        )
        assert (
            f'| params (M) | {cards.fmt(entry["params_m"])} |' in text
            and f'| GMACs | {cards.fmt(entry["gmacs"])} |' in text
        )
        assert 'import hybrid_zoo' in text and f"timm.create_model('{path.stem}'" in text
        assert 'pip install "hybrid_zoo[hub]' in text and '`import hybrid_zoo`\nregisters it in timm' in text
        assert 'CPU speed' not in text and 'Fashion-MNIST' not in text  # optional sections only with their files


def test_optional_result_files_add_sections(tmp_path):
    results = tmp_path / 'results'
    results.mkdir()
    (results / 'model_stats.json').write_text(json.dumps(_stats(['convformer_tiny', 'convformer_tiny_late'])))
    (results / 'fmnist-cpu64.json').write_text(
        json.dumps(
            {
                'meta': {'epochs': 5},
                'models': {'convformer_tiny': {'top1': 91.37, 'top5': 99.81, 'architecture_version': 2}},
            }
        )
    )
    # a v1 row (no architecture_version) of a model v2 changed is left out; late's v1 row still describes late
    bench = {'convformer_tiny_late': {'infer_img_s': 123.456, 'x': 7}, 'convformer_tiny': {'infer_img_s': 55.5}}
    (results / 'bench-cpu.json').write_text(json.dumps({'meta': {'threads': 2}, 'models': bench}))
    cats = {k: {'share_pct': 1.0} for k in ('attention', 'depthwise', 'activation')}
    entry = {'model': 'convformer_tiny_late', 'pct_of_reference': 73.4, 'ceiling_pct_of_reference': 79.7}
    entry.update(shape_ceiling_pct=77.5, categories=dict(cats, attention={'share_pct': 0.9}))
    train = dict(entry, pct_of_reference=53.7, ceiling_pct_of_reference=61.6, backward_over_forward=2.17)
    (results / 'profile-cpu.json').write_text(
        json.dumps({'meta': {'threads': 2}, 'models': [entry], 'training': [train]})
    )
    tiny, late = cards.render_architecture_cards(results / 'model_stats.json', tmp_path / 'cards')
    tiny_text, late_text = tiny.read_text(), late.read_text()
    assert '## What caps its CPU speed' in late_text and 'What caps' not in tiny_text
    for row in (
        '| inference ceiling: % with every GEMM at the 1x1 rate | 79.70 |',
        '| training ceiling: % with every GEMM at the 1x1 rate | 61.60 |',
        '| inference: attention share of the time (%) | 0.9 |',  # 4 significant digits below 1
        '| training: backward time / forward time | 2.17 |',
    ):
        assert row in late_text, row
    assert '## Fashion-MNIST' in tiny_text and '91.37' in tiny_text and 'CPU speed' not in tiny_text
    assert '55.5' not in tiny_text
    assert header(tiny_text)['model-index'][0]['results'][0]['metrics'][0]['value'] == 91.37
    assert '## CPU speed' in late_text and '123.46' in late_text and 'Fashion-MNIST' not in late_text
    assert '| x |' not in late_text  # only the chosen bench fields reach a card


def test_cards_cli(trained, tmp_path, capsys):
    stats_file = tmp_path / 'model_stats.json'
    stats_file.write_text(json.dumps(_stats(['convformer_tiny'])))
    assert cards.main(['architectures', '--stats', str(stats_file), '--out', str(tmp_path / 'out')]) == 0
    assert (tmp_path / 'out' / 'convformer_tiny.md').is_file()
    out = tmp_path / 'example.md'
    assert (
        cards.main(['trained', str(trained[0].parent), '--repo-id', 'zoo/convformer_tiny.fmnist', '--out', str(out)])
        == 0
    )
    assert out.read_text().startswith('---\n') and 'zoo/convformer_tiny.fmnist' in out.read_text()


def test_the_front_yardstick_reaches_the_card_as_its_own_result(tmp_path):
    results = tmp_path / 'results'
    results.mkdir()
    (results / 'model_stats.json').write_text(json.dumps(_stats(['convformer_tiny'])))
    for name, top1 in (('fmnist-cpu64.json', 82.25), ('fmnist-front96.json', 86.12)):
        row = {'top1': top1, 'top5': 99.6, 'seeds': 3, 'architecture_version': 2}
        (results / name).write_text(json.dumps({'meta': {}, 'models': {'convformer_tiny': row}}))
    (card,) = cards.render_architecture_cards(results / 'model_stats.json', tmp_path / 'cards')
    text = card.read_text()
    assert '## Fashion-MNIST (front yardstick: 96 px' in text and '86.12' in text
    results = header(text)['model-index'][0]['results']
    scores = {m['name']: m['value'] for r in results for m in r['metrics'] if m['name'].startswith('Top-1')}
    assert scores == {'Top-1 accuracy (cpu64)': 82.25, 'Top-1 accuracy (front96)': 86.12}
