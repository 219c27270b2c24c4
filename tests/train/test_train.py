"""Training: the main job end to end, reproducibility, exact resume, fine-tuning, and every failure path.

Tiny on purpose: 32 px digits, a few dozen images, a handful of optimizer steps per run.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import safetensors.torch
import timm
import torch

import hybrid_zoo  # noqa: F401  (registers the models)
from hybrid_zoo.train import data
from hybrid_zoo.train import loop as T
from hybrid_zoo.train.data import DataError
from hybrid_zoo.train.evaluate import UnknownModelError, evaluate
from hybrid_zoo.train.loop import NonFiniteLossError, ResumeMismatchError, TrainConfig, fit
from hybrid_zoo_cli import data as data_cli
from hybrid_zoo_cli import evaluate as eval_cli
from hybrid_zoo_cli import train as train_cli
from hybrid_zoo_config.train import config_from_args

pytestmark = pytest.mark.train

RESULT_KEYS = {'top1', 'top5', 'per_class', 'num_samples', 'dataset', 'split', 'weights'}
EPOCH_KEYS = {'epoch', 'train_loss', 'val_loss', 'val_top1', 'val_top5', 'lr', 'images_per_s', 'time'}


@pytest.fixture(scope='module')
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'digits'
    data.prepare_digits(path)
    return path


def _cfg(out, dataset, **overrides) -> TrainConfig:
    base = dict(
        model='test_convnext',
        dataset=str(dataset),
        img_size=32,
        in_chans=1,
        epochs=1,
        batch_size=16,
        workers=0,
        max_train_samples=64,
        max_val_samples=64,
        lr=3e-3,
        warmup_epochs=0.25,
        scale=(0.6, 1.0),
        hflip=0.0,
        output_dir=str(out),
    )
    return TrainConfig(**{**base, **overrides})


def _weights(path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def _epochs(out) -> list[dict]:
    lines = (out / 'metrics.jsonl').read_text().splitlines()
    # wall-clock fields differ between runs by nature
    return [{k: v for k, v in json.loads(line).items() if k not in ('time', 'images_per_s')} for line in lines]


def test_main_job_convformer_cli(tmp_path, digits, capsys):
    """The README main job in small: our model, CLI, 2 epochs on digits, Hub folder loaded back through timm."""
    assert timm.is_model('convformer_tiny')
    out = tmp_path / 'run'
    argv = ['--model', 'convformer_tiny', '--dataset', str(digits), '--img-size', '32', '--in-chans', '1']
    argv += ['--epochs', '2', '--batch-size', '32', '--max-train-samples', '256', '--max-val-samples', '120']
    argv += ['--workers', '0', '--lr', '2e-3']
    argv += ['--warmup-epochs', '0.3', '--scale', '0.6', '1', '--hflip', '0', '--ema', '--log-with', 'tensorboard']
    assert train_cli.main(argv + ['--output-dir', str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model_dir = out / 'model'
    assert summary['model_dir'] == str(model_dir) and summary['epochs_done'] == 2

    assert sorted(p.name for p in model_dir.iterdir()) == [
        'config.json',
        'confusion_matrix.png',
        'model.safetensors',
        'results.json',
        'train_args.json',
        'training_curves.png',
    ]
    config = json.loads((model_dir / 'config.json').read_text())
    assert config['architecture'] == 'convformer_tiny' and config['num_classes'] == 10
    assert config['label_names'] == [str(i) for i in range(10)]
    assert config['pretrained_cfg']['input_size'] == [1, 32, 32] and len(config['pretrained_cfg']['mean']) == 1
    results = json.loads((model_dir / 'results.json').read_text())
    assert RESULT_KEYS <= set(results) and results['num_samples'] == 120
    # digits has no validation split: the validation rows are carved from train, never taken from test
    assert results['split'] == 'train[val 0.1, seed 42]' and summary['val_source'] == results['val_source']
    assert results['val_source'] == 'validation carved from train, 10%, stratified, seed 42'
    assert set(results['per_class']) == set(config['label_names'])
    assert results['weights'] in ('model', 'ema') and results['ema_top1'] is not None
    assert results['top1'] > 30, results  # chance is 10%
    train_args = json.loads((model_dir / 'train_args.json').read_text())
    assert set(train_args) == {f.name for f in dataclasses.fields(TrainConfig)} and train_args['num_classes'] == 10
    for png in ('training_curves.png', 'confusion_matrix.png'):
        assert (model_dir / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    epochs = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()]
    assert [e['epoch'] for e in epochs] == [1, 2] and all(EPOCH_KEYS <= set(e) for e in epochs)
    assert json.loads((out / 'checkpoints' / 'last' / 'meta.json').read_text())['epoch'] == 2
    assert (out / 'checkpoints' / 'best' / 'model.safetensors').is_file()
    assert list((out / 'logs').rglob('events.out.tfevents*'))

    # timm loads the folder on its own, with the labels; evaluating it reproduces the training result
    model = timm.create_model(f'local-dir:{model_dir}', pretrained=True)
    assert model.pretrained_cfg['label_names'] == config['label_names']
    reference = _weights(model_dir / 'model.safetensors')
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    _, val, _ = data.load_train_val(str(digits), seed=TrainConfig.seed, max_val_samples=120)  # the rows validated on
    assert not set(val.rows) & set(data.load_train_val(str(digits), seed=TrainConfig.seed)[0].rows)
    again = evaluate(str(model_dir), val.dataset.select(val.rows), 'val', batch_size=128)
    assert again['top1'] == pytest.approx(results['top1'], abs=1e-3)


@pytest.mark.hub
def test_demo_tests_on_the_split_that_chose_nothing(tmp_path, digits, monkeypatch, capsys):
    """The demo validates (picks the weights) on rows carved from train; its headline is the whole test split."""
    from hybrid_zoo import demo
    from hybrid_zoo_cli import demo as demo_cli

    def digits_only(cache):
        return 'digits', str(digits)

    monkeypatch.setattr(data, 'prepare_default', digits_only)
    monkeypatch.setattr(demo, 'prepare_default', digits_only, raising=False)  # when demo imports it by name
    argv = ['--model', 'test_convnext', '--epochs', '1', '--train-samples', '64', '--img-size', '32']
    assert demo_cli.main(argv + ['--batch-size', '16', '--workers', '0', '--output-dir', str(tmp_path)]) == 0
    summary = json.loads((tmp_path / 'demo_summary.json').read_text())
    assert summary['val_source'] == 'validation carved from train, 10%, stratified, seed 42'
    assert (summary['test_split'], summary['test_samples']) == ('test', 360)
    assert summary['weights_bit_identical'] and summary['logits_bit_identical']
    results = json.loads((tmp_path / 'train' / 'model' / 'results.json').read_text())
    assert results['split'] == 'train[val 0.1, seed 42]' and results['num_samples'] == 144


def test_same_seed_same_run_and_exact_resume(tmp_path, digits):
    """Two runs with one seed are identical; 1 epoch + kill + resume == 2 epochs straight (with EMA, mixup, AA)."""
    cfg = _cfg(tmp_path / 'a', digits, epochs=2, ema=True, mixup=0.4, cutmix=0.5, aa='rand-m9-mstd0.5-inc1')
    cfg = dataclasses.replace(cfg, reprob=0.25)
    a = fit(cfg)
    b = fit(dataclasses.replace(cfg, output_dir=str(tmp_path / 'b')))
    part = fit(dataclasses.replace(cfg, output_dir=str(tmp_path / 'c'), stop_after_epoch=1))
    assert part['epochs_done'] == 1 and part['model_dir'] is None and not (tmp_path / 'c' / 'model').exists()
    c = fit(dataclasses.replace(cfg, output_dir=str(tmp_path / 'c'), resume='auto'))

    wa = _weights(tmp_path / 'a' / 'model' / 'model.safetensors')
    for other in ('b', 'c'):
        wo = _weights(tmp_path / other / 'model' / 'model.safetensors')
        assert all(torch.equal(wa[k], wo[k]) for k in wa), other
        assert _epochs(tmp_path / other) == _epochs(tmp_path / 'a'), other
    for key in ('top1', 'top5', 'loss', 'ema_top1', 'model_top1', 'weights', 'num_updates'):
        assert a[key] == b[key] == c[key], key
    ema_a = torch.load(tmp_path / 'a' / 'checkpoints' / 'last' / 'custom_checkpoint_1.pkl', weights_only=False)
    ema_c = torch.load(tmp_path / 'c' / 'checkpoints' / 'last' / 'custom_checkpoint_1.pkl', weights_only=False)
    assert all(torch.equal(ema_a[k], ema_c[k]) for k in ema_a)


def test_channels_last_checkpointing_bf16_accumulation(tmp_path, digits):
    cfg = _cfg(tmp_path, digits, channels_last=True, grad_checkpointing=True, mixed_precision='bf16')
    result = fit(dataclasses.replace(cfg, grad_accum_steps=2, clip_grad=1.0, smoothing=0.0, layer_decay=0.8))
    assert result['num_updates'] == 2 and result['mixed_precision'] == 'bf16'
    model = timm.create_model(f'local-dir:{tmp_path / "model"}', pretrained=True)  # contiguous, float32 export
    assert next(model.parameters()).dtype == torch.float32


def test_fine_tune_from_local_folder(tmp_path, digits):
    """--pretrained <folder>: new classes (classifier re-initialised) and 3 input channels (stem adapted)."""
    from datasets import ClassLabel, DatasetDict, load_from_disk
    from timm.models import save_for_hf

    source = timm.create_model('test_convnext', in_chans=1, num_classes=10)
    save_for_hf(source, tmp_path / 'source', model_config={'label_names': list('0123456789')}, safe_serialization=True)
    cfg = _cfg(tmp_path / 'ft', digits, model='ignored', pretrained=str(tmp_path / 'source'), in_chans=3)
    model = T.build_model(cfg, num_classes=3)
    assert T.model_name(model) == 'test_convnext' and model.num_classes == 3
    assert model.stem[0].weight.shape[1] == 3
    block = 'stages.1.blocks.0.conv_dw.weight'
    assert torch.equal(model.state_dict()[block], source.state_dict()[block])

    three = load_from_disk(str(digits)).filter(lambda ex: ex['label'] < 3)
    three = three.cast_column('label', ClassLabel(names=['zero', 'one', 'two']))
    DatasetDict(three).save_to_disk(str(tmp_path / 'three'))
    result = fit(dataclasses.replace(cfg, dataset=str(tmp_path / 'three')))
    config = json.loads((tmp_path / 'ft' / 'model' / 'config.json').read_text())
    assert config['architecture'] == 'test_convnext' and config['num_classes'] == 3
    assert config['label_names'] == ['zero', 'one', 'two'] and config['model_args']['in_chans'] == 3
    assert result['model'] == 'test_convnext'


# ----------------------------------------------------------------------------------------------------------------------
# Failures


@pytest.fixture(scope='module')
def one_epoch_checkpoint(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp('partial')
    cfg = _cfg(out, digits, epochs=2, stop_after_epoch=1)
    fit(cfg)
    return cfg, out / 'checkpoints' / 'last'


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, digits, monkeypatch):
    real_build_loss = T.build_loss
    calls = {'n': 0}

    def poisoned_build_loss(cfg, num_classes):
        mixup, loss_fn = real_build_loss(cfg, num_classes)

        def loss(logits, target):
            calls['n'] += 1
            value = loss_fn(logits, target)
            return value * float('nan') if calls['n'] == 6 else value  # step 2 of epoch 2

        return mixup, loss

    monkeypatch.setattr(T, 'build_loss', poisoned_build_loss)
    cfg = _cfg(tmp_path, digits, epochs=3)
    last = tmp_path / 'checkpoints' / 'last'
    with pytest.raises(NonFiniteLossError, match=r'loss is nan at epoch 2, step 1 .*\(epoch 1\) is untouched'):
        fit(cfg)
    assert json.loads((last / 'meta.json').read_text())['epoch'] == 1
    assert all(torch.isfinite(v).all() for v in _weights(last / 'model.safetensors').values())
    assert not (tmp_path / 'model').exists()

    monkeypatch.undo()  # the checkpoint left behind resumes
    assert fit(dataclasses.replace(cfg, resume='auto'))['epochs_done'] == 3


def test_diverging_lr_is_caught(tmp_path, digits, caplog):
    argv = ['--model', 'test_convnext', '--dataset', str(digits), '--img-size', '32', '--in-chans', '1', '--workers']
    argv += ['0', '--max-train-samples', '64', '--batch-size', '16', '--opt', 'sgd', '--lr', '1e6', '--warmup-epochs']
    assert train_cli.main(argv + ['0', '--output-dir', str(tmp_path)]) == 2
    assert 'training loss is nan' in caplog.text and 'No checkpoint had been written yet' in caplog.text


def test_unknown_model_suggests_close_names(tmp_path, digits):
    with pytest.raises(UnknownModelError, match=r"unknown model 'convformer_tinny'\. Did you mean: convformer_tiny"):
        fit(_cfg(tmp_path / 'run', digits, model='convformer_tinny'))
    folder = tmp_path / 'hub_like'
    folder.mkdir()
    (folder / 'config.json').write_text(json.dumps({'architecture': 'test_convnxt', 'num_classes': 3}))
    with pytest.raises(UnknownModelError, match='Did you mean: test_convnext'):
        fit(_cfg(tmp_path / 'run', digits, pretrained=str(folder)))


def test_missing_columns_named_in_cli_error(tmp_path, digits, caplog):
    argv = ['--model', 'test_convnext', '--dataset', str(digits), '--image-column', 'pixels', '--workers', '0']
    assert train_cli.main(argv + ['--output-dir', str(tmp_path)]) == 2
    assert "dataset has no column 'pixels'; it has columns {'image': 'Image', 'label': 'ClassLabel'}" in caplog.text


def test_labels_outside_num_classes(tmp_path, digits):
    with pytest.raises(DataError, match=r'--num-classes 5 is smaller than the 10 classes'):
        fit(_cfg(tmp_path, digits, num_classes=5))


def test_unreadable_image_names_row(tmp_path, digits):
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(digits))['train'].select(range(32)).cast_column('image', _raw_image())
    rows = ds.to_dict()
    rows['image'][21] = {'bytes': b'\x89PNG broken', 'path': None}
    broken = type(ds).from_dict(rows, features=ds.features).cast_column('image', _raw_image(decode=True))
    DatasetDict({'train': broken}).save_to_disk(str(tmp_path / 'broken'))
    cfg = _cfg(
        tmp_path / 'run',
        tmp_path / 'broken',
        max_train_samples=None,
        max_val_samples=None,
        val_fraction=0.25,
        batch_size=8,
    )
    with pytest.raises(DataError, match=r"row 21 of split 'train' of broken"):
        fit(cfg)


def _raw_image(decode: bool = False):
    from datasets import Image

    return Image(decode=decode)


def test_resume_refuses_other_model_or_data(one_epoch_checkpoint):
    cfg, last = one_epoch_checkpoint
    with pytest.raises(ResumeMismatchError, match=r"model: checkpoint 'test_convnext', this run 'test_resnet'"):
        fit(dataclasses.replace(cfg, model='test_resnet', resume=str(last)))
    with pytest.raises(ResumeMismatchError, match=r'dataset num_train: checkpoint 64, this run 48'):
        fit(dataclasses.replace(cfg, max_train_samples=48, resume='auto'))
    with pytest.raises(ResumeMismatchError, match='not a checkpoint folder'):
        fit(dataclasses.replace(cfg, resume=str(last.parent)))


def test_cli_help_explains_every_flag(capsys):
    import hybrid_zoo_cli as cli

    for module in (train_cli, eval_cli, data_cli):
        actions = module.build_parser()._actions
        assert all(a.help and len(a.help) > 10 for a in actions), module.__name__
    with pytest.raises(SystemExit) as e:
        cli.main(['train', '--help'])
    assert e.value.code == 0 and '--grad-accum-steps' in capsys.readouterr().out
    cfg = config_from_args(['--model-kwargs', 'drop_path_rate=0.1', 'act=gelu', '--scale', '0.5', '1', '--ema'])
    assert cfg.model_kwargs == {'drop_path_rate': 0.1, 'act': 'gelu'} and cfg.scale == (0.5, 1.0) and cfg.ema
    assert dataclasses.asdict(config_from_args([])) == dataclasses.asdict(TrainConfig())


def test_metrics_log_survives_interrupted_epoch(tmp_path):
    log = tmp_path / 'metrics.jsonl'
    log.write_text('\n'.join(json.dumps({'epoch': e}) for e in (1, 2, 3)) + '\n')
    assert [r['epoch'] for r in T._read_metrics(log, 2, {'epoch': 2})] == [1, 2]
    log.write_text(json.dumps({'epoch': 1}) + '\n')
    assert [r['epoch'] for r in T._read_metrics(log, 2, {'epoch': 2})] == [1, 2]
