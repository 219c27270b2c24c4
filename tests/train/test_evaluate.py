"""Evaluation: metrics, confusion matrix, model sources, label handling, the ``hybrid-zoo eval`` command."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from hybrid_zoo.factory import PickleRefusedError
from hybrid_zoo.train import data
from hybrid_zoo.train import evaluate as E
from hybrid_zoo.train.data import DataError
from hybrid_zoo.train.loop import TrainConfig, build_model, fit
from hybrid_zoo_cli import evaluate as eval_cli

pytestmark = pytest.mark.train


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A test_convnext trained for one short epoch on digits, validated on the full test split (asked for by name:
    the default carves validation rows from train), so evaluating the test split reproduces the training result."""
    root = tmp_path_factory.mktemp('eval')
    data.prepare_digits(root / 'digits')
    cfg = TrainConfig(
        model='test_convnext',
        dataset=str(root / 'digits'),
        val_split='test',
        img_size=32,
        in_chans=1,
        epochs=1,
        batch_size=32,
        max_train_samples=128,
        workers=0,
        lr=3e-3,
        warmup_epochs=0.2,
        hflip=0.0,
        output_dir=str(root / 'run'),
    )
    result = fit(cfg)
    return root / 'digits', root / 'run' / 'model', result


def test_metrics_from_predictions():
    pred = E.Predictions(
        topk=torch.tensor([[0, 1], [1, 0], [1, 2], [2, 0]]), targets=torch.tensor([0, 0, 2, 2]), loss=torch.ones(4)
    )
    m = E.classification_metrics(pred, ['a', 'b', 'c'])
    assert (m['top1'], m['top5'], m['num_samples']) == (50.0, 100.0, 4)
    assert m['per_class'] == {'a': 50.0, 'b': None, 'c': 50.0}
    assert m['confusion_matrix'] == [[1, 1, 0], [0, 0, 0], [0, 1, 1]]


def test_evaluate_folder_matches_training_and_writes_plot(trained, tmp_path):
    digits, model_dir, result = trained
    results = E.evaluate(str(model_dir), str(digits), 'test', output_dir=tmp_path, batch_size=100)
    assert results['top1'] == pytest.approx(result['top1'], abs=1e-3)
    assert results['num_samples'] == 360 and results['split'] == 'test' and results['dataset'] == 'digits'
    assert list(results['per_class']) == [str(i) for i in range(10)]
    assert sum(map(sum, results['confusion_matrix'])) == 360
    assert 0 <= results['top1'] <= results['top5'] <= 100
    assert (tmp_path / 'confusion_matrix.png').read_bytes()[:4] == b'\x89PNG'
    assert json.loads((tmp_path / 'eval_results.json').read_text())['top1'] == results['top1']


def test_evaluate_module_and_loaded_dataset(trained):
    from datasets import load_from_disk

    digits, model_dir, _ = trained
    model = timm.create_model(f'local-dir:{model_dir}', pretrained=True)
    split = load_from_disk(str(digits))['test'].select(range(50))
    results = E.evaluate(model, split, 'test')
    assert results['num_samples'] == 50 and results['model'] == 'test_convnext'
    # labels the model cannot predict are an error, not a silently wrong accuracy
    narrow = timm.create_model('test_convnext', in_chans=1, num_classes=5)
    with pytest.raises(DataError, match=r'labels outside \[0, 5\)'):
        E.evaluate(narrow, split, 'test')


def test_model_sources_and_suggestions(tmp_path):
    assert E.resolve_model_source('convformer_tiny', None) == ('convformer_tiny', False)
    assert E.resolve_model_source('convformer_tiny', 'default') == ('convformer_tiny', True)
    assert E.resolve_model_source('convformer_tiny', 'in1k') == ('convformer_tiny.in1k', True)
    assert E.resolve_model_source('x', 'convformer_small.in1k') == ('convformer_small.in1k', True)
    assert E.resolve_model_source('x', 'hf-hub:org/name') == ('hf-hub:org/name', True)
    assert E.resolve_model_source('x', str(tmp_path)) == (f'local-dir:{tmp_path}', True)
    with pytest.raises(E.UnknownModelError, match="write a Hub repo as 'hf-hub:org/name'"):
        E.resolve_model_source('x', 'org/name')
    with pytest.raises(E.UnknownModelError, match='Did you mean: test_convnext'):
        E.load_model('test_convnxt.r160_in1k')


def test_eval_cli(trained, tmp_path, capsys):
    digits, model_dir, result = trained
    argv = ['--model', str(model_dir), '--dataset', str(digits), '--workers', '0', '--output-dir', str(tmp_path)]
    assert eval_cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['num_samples'] == 360 and summary['top1'] == pytest.approx(result['top1'], abs=1e-3)
    assert eval_cli.main(['--model', str(model_dir), '--dataset', str(digits), '--split', 'validation']) == 2


def test_pickle_only_folder_is_refused_by_eval_and_train(trained, tmp_path, caplog):
    """``hybrid-zoo eval`` and ``train --pretrained`` refuse a folder holding only a pickle, before unpickling it."""
    from safetensors.torch import load_file

    digits, model_dir, result = trained
    folder = tmp_path / 'bin-only'
    folder.mkdir()
    (folder / 'config.json').write_bytes((model_dir / 'config.json').read_bytes())
    torch.save(load_file(model_dir / 'model.safetensors'), folder / 'pytorch_model.bin')
    assert eval_cli.main(['--model', str(folder), '--dataset', str(digits), '--workers', '0']) == 2
    assert 'pytorch_model.bin is a pickle' in caplog.text and 'allow_pickle=True' in caplog.text
    cfg = TrainConfig(model='test_convnext', pretrained=str(folder), dataset=str(digits), output_dir=str(tmp_path))
    with pytest.raises(PickleRefusedError, match='it was not loaded'):
        build_model(cfg, num_classes=10)
    results = E.evaluate(str(folder), str(digits), 'test', batch_size=100, allow_pickle=True)  # when asked
    assert results['top1'] == pytest.approx(result['top1'], abs=1e-3)
