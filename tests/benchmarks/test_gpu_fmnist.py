"""The GPU Fashion-MNIST protocol, run as a CPU smoke test: same code path, tiny subset, fp32."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hybrid_zoo.benchmarks import gpu_fmnist as gpu_protocol
from hybrid_zoo.train.data import FASHION_MNIST_DIR, fashion_mnist_available

pytestmark = pytest.mark.train


def test_recipe_is_the_cpu_one_on_all_data():
    from hybrid_zoo.benchmarks.compare import RECIPES

    r, base = gpu_protocol.gpu_recipe(epochs=4, batch_size=256), RECIPES['cpu64']
    assert r.train_samples is None and r.val_fraction == 0 and r.epochs == 4
    assert r.lr == pytest.approx(base.lr * 2)  # sqrt(256 / 64)
    same = ('img_size', 'in_chans', 'weight_decay', 'smoothing', 'drop_path_rate', 'scale', 'warmup_epochs', 'aa')
    assert all(getattr(r, k) == getattr(base, k) for k in same)


def test_augment_crops_inside_the_image_and_flips():
    torch.manual_seed(0)
    x = torch.arange(28.0).repeat(28, 1)[None, None].repeat(64, 1, 1, 1) / 27  # brightness grows left to right
    out = gpu_protocol.augment(x, 64, (0.6, 1.0), torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 64, 64) and out.min() >= 0 and out.max() <= 1
    slope = out[:, 0, 32, -1] - out[:, 0, 32, 0]
    assert (slope > 0).any() and (slope < 0).any()  # some flipped, some not
    # full scale, no flip possible to tell apart: the crop never leaves the image (no border smear beyond 1 px)
    full = gpu_protocol.augment(x, 28, (1.0, 1.0), torch.Generator().manual_seed(1))
    assert torch.allclose(full[:, 0, 14].abs().sum(1), x[:, 0, 14].sum(1), rtol=0.2)


@pytest.mark.skipif(not fashion_mnist_available(FASHION_MNIST_DIR), reason='dataset-fashion-mnist not installed')
def test_smoke_run_writes_compare_format(tmp_path, monkeypatch):
    monkeypatch.setenv('OUT', str(tmp_path))
    argv = ['--device', 'cpu', '--no-amp', '--models', 'test_resnet', 'convformer_tiny', '--epochs', '1']
    argv += ['--batch-size', '64', '--img-size', '32', '--train-samples', '256', '--test-samples', '200']
    assert gpu_protocol.main(argv) == 0
    data = json.loads((tmp_path / 'fmnist-gpu64.json').read_text())
    assert [r['model'] for r in data['runs']] == ['test_resnet', 'convformer_tiny']
    assert data['recipe']['train_samples'] == 256 and data['recipe']['img_size'] == 32
    for r in data['runs']:
        assert 0 <= r['test_top1'] <= r['test_top5'] <= 100 and r['train_img_per_s'] > 0
        assert len(r['per_class_test']) == 10 and math.isfinite(r['gmacs'])
    md = (tmp_path / 'fmnist-gpu64.md').read_text().splitlines()
    assert sum(line.startswith('| `') for line in md) == 2  # one table row per model
    assert 'final weights are tested' in '\n'.join(md)
    assert (tmp_path / 'fmnist-gpu64.png').stat().st_size > 0


@pytest.mark.skipif(not fashion_mnist_available(FASHION_MNIST_DIR), reason='dataset-fashion-mnist not installed')
def test_budget_skips_models_that_would_not_fit(tmp_path):
    recipe = gpu_protocol.gpu_recipe(epochs=1, batch_size=64, img_size=32)
    out = gpu_protocol.run(
        ['test_resnet', 'convformer_tiny'],
        recipe,
        FASHION_MNIST_DIR,
        tmp_path / 'r.json',
        device='cpu',
        time_budget=0.01,
        train_samples=128,
        test_samples=64,
        amp=False,
    )
    assert [r['model'] for r in out['runs']] == ['test_resnet']  # the first always runs
    assert out['skipped'][0]['model'] == 'convformer_tiny' and 'budget' in out['skipped'][0]['reason']
