"""A pushed model loads in transformers (``AutoModelForImageClassification`` and ``pipeline('image-classification')``,
its timm wrapper) after ``import hybrid_zoo``, from the local Hub server and from a local folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from huggingface_hub import snapshot_download
from PIL import Image

import hybrid_zoo  # noqa: F401  (registers the architectures: transformers builds them through timm)
from hybrid_zoo.hub import client as hub

transformers = pytest.importorskip('transformers')

pytestmark = [
    pytest.mark.hub,
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

SLIM = {'widths': (32, 32, 64, 64), 'depths': (1, 1, 1, 1)}
LABELS = ['t-shirt', 'trouser', 'pullover']


def pushed(tmp_path, repo: str, in_chans: int) -> torch.nn.Module:
    torch.manual_seed(in_chans)
    model = timm.create_model('convformer_tiny', num_classes=len(LABELS), in_chans=in_chans, **SLIM).eval()
    timm.models.save_for_hf(
        model,
        tmp_path / 'model',
        model_config={'label_names': LABELS},
        safe_serialization=True,
        data_config={'input_size': (in_chans, 64, 64)},
    )
    (tmp_path / 'model' / 'pytorch_model.bin').unlink(missing_ok=True)
    assert 'num_classes' in json.loads((tmp_path / 'model' / 'config.json').read_text())['model_args']  # timm's
    hub.push(tmp_path, repo)
    return model


@pytest.mark.parametrize('in_chans', [3, 1])
def test_pushed_model_loads_in_transformers(tmp_path, hub_server, hf_token, in_chans):
    from transformers import AutoModelForImageClassification

    repo = f'alice/transformers-{in_chans}ch'
    model = pushed(tmp_path, repo, in_chans)
    local = snapshot_download(repo, local_dir=tmp_path / 'download')
    x = torch.randn(2, in_chans, 64, 64)
    with torch.no_grad():
        expected = model(x)
    for source in (repo, local):  # the Hub server, and a local folder holding what was pushed
        wrapped = AutoModelForImageClassification.from_pretrained(source).eval()
        assert wrapped.config.id2label == dict(enumerate(LABELS))
        with torch.no_grad():
            assert torch.allclose(wrapped(pixel_values=x).logits, expected, atol=1e-5)
    # our own loader reads the same published config
    assert torch.equal(hub.load(repo).eval()(x), expected)


@pytest.mark.parametrize('in_chans', [3, 1])
def test_pushed_model_runs_in_the_image_classification_pipeline(tmp_path, hub_server, hf_token, in_chans):
    """The pipeline opens every image as RGB: a grayscale model reads it as its luma, the same scores as timm's own
    pipeline on the grayscale conversion (up to PIL's rounding to whole grey levels)."""
    repo = f'alice/transformers-pipeline-{in_chans}ch'
    pushed(tmp_path, repo, in_chans)
    model = hub.load(repo).eval()  # with the published preprocessing (64 px) in its pretrained cfg
    classify = transformers.pipeline('image-classification', model=repo)
    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype('uint8'))
    got = classify(image, top_k=len(LABELS))
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    with torch.no_grad():
        probs = model(transform(image if in_chans == 3 else image.convert('L')).unsqueeze(0)).softmax(-1)[0]
    if in_chans == 1:
        assert dict(zip(LABELS, probs.tolist(), strict=True)) == pytest.approx(
            {r['label']: r['score'] for r in got}, abs=2e-3
        )
        return
    assert {r['label']: round(r['score'], 4) for r in got} == {
        label: round(p, 4) for label, p in zip(LABELS, probs.tolist(), strict=True)
    }
