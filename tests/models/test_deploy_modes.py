"""CPU deployment modes (compiled, ONNX Runtime, int8) built from one model and checked against eager; export --int8."""

from __future__ import annotations

import json
import re

import pytest
import timm
import torch
from timm.models import reparameterize_model

import hybrid_zoo  # noqa: F401
from hybrid_zoo.benchmarks.peers import FRONT_PEERS
from hybrid_zoo.deploy import MODES, DeployError, build
from hybrid_zoo.factory import create_model

SMALL = {'widths': (16, 32, 64, 96), 'depths': (1, 1, 2, 1), 'num_classes': 10}


@pytest.fixture(scope='module')
def folded():
    torch.manual_seed(0)
    return reparameterize_model(timm.create_model('convformer_tiny', **SMALL).eval())


@pytest.mark.parametrize('mode', MODES)
def test_each_mode_matches_eager(folded, mode, tmp_path):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 64, 64)
    calibration = [torch.randn(8, 3, 64, 64) for _ in range(4)]
    deployed = build(folded, mode, x, calibration, threads=1, work_dir=tmp_path)
    out = deployed.run(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 10)
    tolerance = {'eager': 0.0, 'compiled': 1e-4, 'onnxruntime': 1e-4, 'int8': 0.05, 'int8-pt2e': 0.05}[mode]
    assert deployed.max_abs_diff <= tolerance, (mode, deployed.max_abs_diff)
    assert deployed.build_s >= 0
    if mode in ('onnxruntime', 'int8'):
        assert deployed.file_mb > 0


def test_int8_file_is_smaller_than_fp32(folded, tmp_path):
    x = torch.randn(2, 3, 64, 64)
    fp32 = build(folded, 'onnxruntime', x, threads=1, work_dir=tmp_path / 'a')
    int8 = build(folded, 'int8', x, [torch.randn(8, 3, 64, 64)], threads=1, work_dir=tmp_path / 'b')
    assert int8.file_mb < 0.5 * fp32.file_mb


def test_bad_requests_say_what_was_expected(folded):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match=re.escape(f'mode must be one of {MODES}')):
        build(folded, 'tensorrt', x)
    for mode in ('int8', 'int8-pt2e'):
        with pytest.raises(ValueError, match=f'{mode} needs calibration batches'):
            build(folded, mode, x)


def test_the_bench_offers_every_mode():
    from hybrid_zoo_cli.bench import build_parser

    modes = next(a for a in build_parser()._actions if a.dest == 'modes')
    assert tuple(modes.choices) == MODES


def test_a_mode_that_cannot_build_raises_deploy_error(tmp_path):
    class NoExport(torch.nn.Module):
        def forward(self, x):
            gram = x.flatten(2) @ x.flatten(2).transpose(1, 2)
            return torch.linalg.eigvalsh(gram).flatten(1)  # no ONNX operator for it

    with pytest.raises(DeployError, match=r'^onnxruntime failed: ConversionError: [^\x1b]*$'):
        build(NoExport(), 'onnxruntime', torch.randn(1, 3, 32, 32), work_dir=tmp_path)


@pytest.mark.train
def test_export_int8_calibrates_on_real_images_and_reports_accuracy(tmp_path, capsys):
    from hybrid_zoo.deploy import has_vnni
    from hybrid_zoo.train import data
    from hybrid_zoo_cli.export import main

    data.prepare_digits(tmp_path / 'digits')
    out = tmp_path / 'model.int8.onnx'
    args = ['--model', 'test_convnext', '--int8', '--calibration-dataset', str(tmp_path / 'digits')]
    args += [
        '--calibration-samples',
        '64',
        '--evaluate-split',
        'test',
        '--output',
        str(out),
        '--exporter',
        'torchscript',
    ]
    record = tmp_path / 'int8-fmnist.json'
    record.write_text(json.dumps({'meta': {}, 'models': {'other': {'int8_top1': 1.0}}}))
    assert main([*args, '--record', str(record)]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recorded = json.loads(record.read_text())['models']
    assert recorded['other'] == {'int8_top1': 1.0}  # other entries are kept
    assert recorded['test_convnext']['int8_top1'] == report['int8_top1']
    assert recorded['test_convnext']['onnx_int8'] == out.name and str(tmp_path) not in record.read_text()
    assert out.is_file() and report['file_mb'] > 0 and report['images'] == 360
    assert report['calibration'] == '64 images of train'
    assert report['reduce_range'] == (not has_vnni())  # 7-bit weights exactly where u8s8 sums could saturate
    assert report['top1_change'] == pytest.approx(report['int8_top1'] - report['fp32_top1'], abs=1e-6)
    # the other int8 flow (PT2E) priced on the same calibration images and test split, recorded beside it
    assert (
        0 <= report['pt2e_int8_top1'] <= 100 and recorded['test_convnext']['pt2e_int8_top1'] == report['pt2e_int8_top1']
    )
    assert report['pt2e_top1_change'] == pytest.approx(report['pt2e_int8_top1'] - report['fp32_top1'], abs=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith('tmp')] == []  # no temporary folder left

    assert main(['--model', 'test_convnext', '--int8', '--output', str(tmp_path / 'x.onnx')]) == 2


def test_a_grayscale_model_goes_through_pt2e_as_an_equal_three_channel_copy():
    from hybrid_zoo.deploy import three_channel_copy

    torch.manual_seed(0)
    gray = reparameterize_model(timm.create_model('convformer_tiny', in_chans=1, **SMALL).eval())
    wide, expand = three_channel_copy(gray)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(wide(expand(x)), gray(x), atol=1e-5, rtol=1e-5)
        assert gray(x).shape == (2, 10)  # the original is untouched
        colour = torch.randn(2, 3, 64, 64)  # an RGB input: the copy reads its luma, as the model itself does
        torch.testing.assert_close(wide(colour), gray(colour), atol=1e-5, rtol=1e-5)
    calibration = [torch.randn(8, 1, 64, 64) for _ in range(2)]
    deployed = build(gray, 'int8-pt2e', x, calibration)  # inductor alone fails one-channel inputs
    assert deployed.run(torch.randn(3, 1, 64, 64)).shape == (3, 10) and deployed.max_abs_diff <= 0.05
    rgb = timm.create_model('convformer_tiny', **SMALL).eval()
    same, identity = three_channel_copy(rgb)
    assert same is rgb and identity(x) is x


@pytest.mark.parametrize('name', ['convformer_tiny_late', *FRONT_PEERS])
@pytest.mark.parametrize('fold', [False, True], ids=['trained', 'reparameterized'])
def test_every_front_model_gets_an_equal_three_channel_copy(name, fold):
    # the input convs come from pretrained_cfg['first_conv'], a name or a tuple of names (FastViT's parallel branches),
    # which reparameterization can fold away; a model read as untouched would fail inductor's one-channel int8 graph
    from hybrid_zoo.deploy import input_convs, three_channel_copy

    torch.manual_seed(0)
    size = 96
    gray = create_model(name, img_size=size, num_classes=10, in_chans=1).eval()
    if fold:
        gray = reparameterize_model(gray)
    assert input_convs(gray), f'{name}: no input conv found from first_conv {gray.pretrained_cfg.get("first_conv")}'
    wide, expand = three_channel_copy(gray)
    assert wide is not gray
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(wide(expand(x)), gray(x), atol=1e-4, rtol=1e-4)
    rgb = create_model(name, img_size=size, num_classes=10).eval()
    same, identity = three_channel_copy(reparameterize_model(rgb) if fold else rgb)
    assert identity(x) is x and same is not None
