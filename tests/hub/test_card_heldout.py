"""Train, evaluate, push: a score measured on a split that chose nothing reaches the card's ``model-index`` with its
dataset and split; the training accuracy, a score of the training split and a score of other weights never do."""

from __future__ import annotations

import json
import shutil

import pytest
from huggingface_hub import ModelCard

from hybrid_zoo import hub
from hybrid_zoo.train import data
from hybrid_zoo.train.evaluate import evaluate
from hybrid_zoo.train.loop import TrainConfig, fit

pytestmark = [pytest.mark.train, pytest.mark.hub]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('heldout')
    digits = data.prepare_digits(tmp / 'digits')
    cfg = TrainConfig(
        model='test_convnext', dataset=str(tmp / 'digits'), img_size=32, in_chans=1, epochs=1, batch_size=32,
        workers=0, max_train_samples=200, output_dir=str(tmp / 'run'),
    )  # fmt: skip
    fit(cfg)
    return {'dir': tmp / 'run', 'data': tmp / 'digits', 'test_rows': len(digits['test'])}


def _model_index(repo: str) -> list[dict]:
    card = ModelCard.load(repo)
    return [
        {'split': r.dataset_split, 'metric': r.metric_name, 'value': r.metric_value}
        for r in (card.data.eval_results or [])
    ]


def test_a_test_score_of_these_weights_reaches_the_model_index(run, hf_token, tmp_path):
    results = evaluate(str(run['dir'] / 'model'), str(run['data']), split='test', output_dir=run['dir'], cpu=True)
    repo = 'alice/heldout-test'
    hub.push(run['dir'], repo, token=hf_token)
    index = _model_index(repo)
    assert {'split': 'test', 'metric': 'Top-1 accuracy', 'value': results['top1']} in index
    assert all(entry['split'] == 'test' for entry in index)  # the validation accuracy that chose the epoch stays out
    published = json.loads((run['dir'] / 'eval_results.json').read_text())
    assert published['weights_sha256'] and published['split'] == 'test'


def test_scores_that_chose_or_trained_or_were_of_other_weights_stay_out(run, hf_token, tmp_path):
    copy = tmp_path / 'run'
    shutil.copytree(run['dir'], copy)
    evaluate(str(copy / 'model'), str(run['data']), split='train', output_dir=copy, cpu=True)
    hub.push(copy, 'alice/heldout-train', token=hf_token)
    assert _model_index('alice/heldout-train') == []

    evaluate(str(copy / 'model'), str(run['data']), split='test', output_dir=copy, cpu=True)
    scores = json.loads((copy / 'eval_results.json').read_text())
    (copy / 'eval_results.json').write_text(json.dumps({**scores, 'weights_sha256': '0' * 64}))
    hub.push(copy, 'alice/heldout-other', token=hf_token)
    assert _model_index('alice/heldout-other') == []
