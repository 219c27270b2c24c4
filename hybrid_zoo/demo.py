"""``hybrid-zoo demo``: the main job, end to end, on the embedded default data with no network.

1. prepare the default dataset (Fashion-MNIST from Debian's ``dataset-fashion-mnist``; scikit-learn's
   digits when that package is missing) as an ordinary Hugging Face dataset on disk;
2. train a ConvFormer on it with the project's Accelerate trainer (resumable: re-running continues), validating on
   a stratified share carved out of the train split: that share picks the weights (model or EMA);
3. evaluate on the untouched test split, which chose nothing (top-1/top-5, per-class accuracy, confusion matrix PNG);
4. start the bundled Hub-protocol server on 127.0.0.1, push the Hub-ready folder (safetensors, timm
   config, model card, results, plots) with the real ``huggingface_hub`` client;
5. in a fresh Python process, ``timm.create_model("hf-hub:...", pretrained=True)`` and check that the
   weights and the logits are bit-identical to the trained model's.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import huggingface_hub.constants

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.hub.client import push
from hybrid_zoo.hub.server import HubServer
from hybrid_zoo.run_files import WEIGHTS_NAME
from hybrid_zoo.train.data import EMBEDDED_CACHE, prepare_default
from hybrid_zoo.train.evaluate import evaluate
from hybrid_zoo.train.loop import TrainConfig, fit

_log = logging.getLogger(__name__)

# Runs in a fresh interpreter: HF_ENDPOINT is read when huggingface_hub is imported, so it must be set
# before Python starts to point timm's `hf-hub:` loader at the local server.
_LOAD_BACK = """
import json, sys
import torch, timm
import hybrid_zoo  # registers the architectures: timm has no plugin discovery
from safetensors.torch import load_file
repo, local = sys.argv[1], sys.argv[2]
model = timm.create_model('hf-hub:' + repo, pretrained=True).eval()
ref = timm.create_model('local-dir:' + local, pretrained=True).eval()
trained = load_file(sys.argv[3])
same = all(torch.equal(v, model.state_dict()[k]) for k, v in trained.items())
x = torch.randn(4, *model.pretrained_cfg['input_size'], generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    logits_equal = torch.equal(model(x), ref(x))
print(json.dumps({'weights_bit_identical': same, 'logits_bit_identical': logits_equal,
                  'label_names': model.pretrained_cfg.get('label_names'), 'num_classes': model.num_classes}))
"""


def run_demo(
    model: str = 'convformer_tiny',
    *,
    epochs: int = 2,
    train_samples: int | None = 6000,
    img_size: int = 64,
    batch_size: int = 64,
    embedded_cache: str | os.PathLike = EMBEDDED_CACHE,
    output_dir: str | os.PathLike = 'runs/demo',
    repo_id: str | None = None,
    workers: int = 2,
) -> dict:
    """The five steps above; ``train_samples`` None or 0 trains on the whole split.

    Returns:
        The summary (also written to ``<output_dir>/demo_summary.json``): the validation and test scores, the repo
        and commit, and whether the weights and logits loaded back from the Hub are bit-identical to the trained
        model's (``weights_bit_identical``, ``logits_bit_identical``); the returned dict adds ``model_dir``, the
        Hub-ready folder the training wrote.

    Raises:
        RuntimeError: loading the model back in a fresh process failed (its stderr is in the message).
    """
    # The bundled server speaks the Hub's HTTP + LFS protocol, not Xet; huggingface_hub reads this once.
    os.environ['HF_HUB_DISABLE_XET'] = '1'

    huggingface_hub.constants.HF_HUB_DISABLE_XET = True

    out = Path(output_dir)
    name, data_path = prepare_default(embedded_cache)
    _log.info('step 1/5: dataset %s at %s', name, data_path)

    cfg = TrainConfig(
        model=model,
        dataset=data_path,
        img_size=img_size,
        in_chans=1,
        epochs=epochs,
        batch_size=batch_size,
        max_train_samples=train_samples or None,
        max_val_samples=2000,
        lr=2e-3,
        scale=(0.6, 1.0),
        color_jitter=0.0,
        channels_last=True,
        workers=workers,
        output_dir=str(out / 'train'),
        resume='auto',
        cpu=True,
    )
    _log.info('step 2/5: training %s for %d epochs at %d px', model, epochs, img_size)
    final = fit(cfg)
    model_dir = Path(final['model_dir'])

    _log.info('step 3/5: evaluating on the full test split (validation: %s)', final['val_source'])
    test = evaluate(str(model_dir), data_path, split='test', img_size=img_size, output_dir=out / 'eval', cpu=True)

    repo_id = repo_id or f'demo/{model}.{name.replace("_", "")}_{img_size}'
    token = 'hf_' + secrets.token_hex(16)  # a throwaway token for the throwaway server; never printed
    with HubServer(out / 'hub', port=0, tokens={token: 'demo'}) as hub:
        _log.info('step 4/5: pushing to %s on the local Hub server %s', repo_id, hub.url)
        commit = push(model_dir.parent, repo_id, token=token, endpoint=hub.url, commit_message=f'{model} on {name}')
        _log.info('step 5/5: loading hf-hub:%s back in a fresh process', repo_id)
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN=token, HF_HUB_DISABLE_XET='1', HF_HOME=tempfile.mkdtemp())
        proc = subprocess.run(
            [sys.executable, '-c', _LOAD_BACK, repo_id, str(model_dir), str(model_dir / WEIGHTS_NAME)],
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode:
        raise RuntimeError(f'loading hf-hub:{repo_id} back failed:\n{proc.stderr[-3000:]}')
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    summary = {
        'dataset': name,
        'model': model,
        'epochs': epochs,
        'img_size': img_size,
        'train_samples': train_samples or 'all',
        'val_source': final['val_source'],
        'val_top1': round(final['top1'], 2),
        'test_split': test['split'],
        'test_samples': test['num_samples'],
        'test_top1': round(test['top1'], 2),
        'test_top5': round(test['top5'], 2),
        'train_time_s': final.get('train_time_s'),
        'repo_id': repo_id,
        'commit': getattr(commit, 'oid', None),
        **loaded,
    }
    write_json_atomic(out / 'demo_summary.json', summary)
    return {**summary, 'model_dir': str(model_dir)}
