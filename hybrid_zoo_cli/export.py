"""Command line of ``hybrid-zoo export``."""

from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='hybrid-zoo export',
        description='Export a model to ONNX (dynamic batch/height/width) and check it against eager PyTorch, '
        'or (--measure) measure folding, torch.compile and ONNX parity for many models.',
    )
    p.add_argument('--model', default='convformer_tiny', help='timm model name, hf-hub:org/name or local-dir:PATH')
    p.add_argument('--pretrained', action='store_true', help='load the weights named by --model')
    p.add_argument('--num-classes', type=int, default=None, help='override the number of classes')
    p.add_argument('--output', default='model.onnx', help='ONNX file to write')
    p.add_argument('--img-size', type=int, default=224, help='side of the example input used for export')
    p.add_argument('--opset', type=int, default=18, help='ONNX opset (>= 17)')
    p.add_argument('--exporter', choices=['dynamo', 'torchscript'], default='dynamo', help='PyTorch ONNX exporter')
    p.add_argument('--no-reparam', action='store_true', help='export the training form (BatchNorm not folded)')
    p.add_argument(
        '--measure',
        nargs='*',
        metavar='MODEL',
        help='measure folding/compile/ONNX parity for these models (none given: the nine) into --results',
    )
    p.add_argument('--results', default='model_cards/results/deploy.json', help='results file for --measure')
    g = p.add_argument_group(
        'int8',
        'Post-training static quantization with ONNX Runtime (QDQ: int8 weights per channel, uint8 activations, '
        'MinMax calibration on real images); --output is then the int8 ONNX file.',
    )
    g.add_argument('--int8', action='store_true', help='write the int8-quantized ONNX model')
    g.add_argument(
        '--calibration-dataset',
        metavar='DATASET',
        help='images to calibrate on (what hybrid-zoo train --dataset takes); required with --int8',
    )
    g.add_argument('--calibration-split', default='train', help='split to calibrate on (default: %(default)s)')
    g.add_argument('--calibration-samples', type=int, default=256, help='calibration images (default: %(default)s)')
    g.add_argument(
        '--evaluate-split',
        metavar='SPLIT',
        help='also report fp32 and int8 top-1 on this split of the calibration dataset (e.g. test), for the ONNX '
        'Runtime file and for the PT2E flow on the same calibration images',
    )
    g.add_argument(
        '--record',
        metavar='JSON',
        help='also add the report to this results file under the architecture name (other entries are kept), '
        'e.g. model_cards/results/int8-fmnist.json, which the model cards show',
    )
    return p
