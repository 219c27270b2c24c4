"""Training from the Hub, through the local Hub-protocol server: a dataset by repo id, weights by ``hf-hub:`` id."""

from __future__ import annotations

import json

import pytest
import timm

from hybrid_zoo.train import data
from hybrid_zoo.train.loop import TrainConfig, fit

pytestmark = [pytest.mark.train, pytest.mark.hub]


def test_fine_tune_hub_model_on_hub_dataset(tmp_path, hf_token, request):
    from timm.models import push_to_hf_hub

    name = request.node.name.replace('_', '-')[:60]
    digits = data.prepare_digits(tmp_path / 'digits')
    small = type(digits)({'train': digits['train'].select(range(96)), 'test': digits['test'].select(range(40))})
    small.push_to_hub(f'alice/{name}-data', token=hf_token)
    source = timm.create_model('test_convnext', in_chans=1, num_classes=10)
    push_to_hf_hub(source, f'alice/{name}', model_config={'label_names': list('0123456789')}, safe_serialization=True)

    cfg = TrainConfig(
        model='ignored',
        pretrained=f'hf-hub:alice/{name}',
        dataset=f'alice/{name}-data',
        img_size=32,
        in_chans=1,
        epochs=1,
        batch_size=16,
        workers=0,
        output_dir=str(tmp_path / 'run'),
    )
    result = fit(cfg)
    # validation is carved from train (10% of 96, stratified), never the test split
    assert (
        result['model'] == 'test_convnext'
        and result['num_samples'] == 10
        and 'carved from train' in result['val_source']
    )
    config = json.loads((tmp_path / 'run' / 'model' / 'config.json').read_text())
    assert config['architecture'] == 'test_convnext' and config['label_names'] == list('0123456789')
    spec = json.loads((tmp_path / 'run' / 'checkpoints' / 'last' / 'meta.json').read_text())['dataset']
    assert spec['name'] == f'alice/{name}-data' and spec['num_train'] == 86
