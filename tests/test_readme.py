"""Every fenced ``python`` / ``bash`` block of README.md runs as printed, in README order, in one scratch folder.

Blocks that train run with tiny settings: each substitution below must match the block (so a README edit that
drops a flag fails here instead of silently running the long version). The set-up block is the one CI runs:
its lines must be ``.ci/run``'s, and its main job (``hybrid-zoo demo``) runs here with tiny settings.
"""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
FENCE = re.compile(r'^```(python|bash)\n(.*?)^```$', re.S | re.M)
QUICK = ['--max-train-samples', '96', '--max-val-samples', '48', '--batch-size', '16', '--workers', '0']

# (a phrase that identifies the block, substitutions (old, new) applied before it runs); None = set-up block
PLAN: list[tuple[str, list[tuple[str, str]] | None]] = [
    ("timm.create_model('convformer_small', pretrained=False", []),
    ('tools/install.sh && hybrid-zoo demo', None),
    ('hybrid_zoo.list_models()', []),
    (
        'hybrid-zoo prepare-data --out data',
        [
            ('--epochs 10', '--epochs 1 ' + ' '.join(QUICK)),
            ('--epochs 5', '--epochs 1 --samples-per-epoch 64 --max-val-samples 32 --batch-size 8 --workers 0'),
        ],
    ),
    ('hybrid-zoo hub-server --port 8765', [('8765', '{port}'), ('sleep 3', 'sleep 5')]),
    (
        'hybrid-zoo bench --models convformer_tiny convnext_nano',
        [
            (
                '--rounds 1',
                '--rounds 1 --img-size 64 --batch-size 2 --train-batch-size 2 --warmup 1 --iters 1 '
                '--latency-warmup 1 --latency-iters 1 --train-warmup 1 --train-iters 1 --reference-batch 1 '
                '--reference-mm-size 256 --reference-iters 1 --layouts channels_last -q',
            )
        ],
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def readme_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text())]


def _plan_for(index: int) -> tuple[str, str, list[tuple[str, str]] | None]:
    lang, code = readme_blocks()[index]
    key, subs = PLAN[index]
    assert key in code, f'README block {index} no longer contains {key!r}: update PLAN'
    return lang, code, subs


def test_every_block_is_planned_and_parses():
    blocks = readme_blocks()
    assert len(blocks) == len(PLAN), f'README has {len(blocks)} code blocks, PLAN covers {len(PLAN)}'
    for index, (lang, code) in enumerate(blocks):
        assert PLAN[index][0] in code, (index, PLAN[index][0])
        if lang == 'python':
            ast.parse(code)
        else:
            subprocess.run(['bash', '-n'], input=code, text=True, check=True)


def test_setup_block_is_what_ci_runs():
    _, code, _ = _plan_for(1)
    commands = [line.split('#')[0].strip() for line in code.splitlines() if line.split('#')[0].strip()]
    assert commands == ['tools/install.sh && hybrid-zoo demo', 'tools/install.sh && tools/test.sh']
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'python3 -m venv' in ci and all(f'\n{c}\n' in ci for c in commands)


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    """A scratch folder that the blocks share (data/, runs/), and the environment of a new shell."""
    work = tmp_path_factory.mktemp('readme')
    env = {k: v for k, v in os.environ.items() if not k.startswith(('HF_ENDPOINT', 'HF_TOKEN'))}
    env.update(
        HF_HOME=str(work / '.hf'),
        HF_HUB_DISABLE_XET='1',
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get('PATH', '')]),
        OMP_NUM_THREADS='2',
    )
    return work, env


def _run(lang: str, code: str, work: Path, env: dict, timeout: float) -> str:
    if lang == 'python':
        argv = [sys.executable, '-c', code]
    else:  # a bash block as a script: stop at the first failing line, never leave a server behind
        argv = ['bash', '-c', "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + code]
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f'{lang} block failed ({proc.returncode}):\n{code}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    )
    return proc.stdout


@pytest.mark.slow
@pytest.mark.train
@pytest.mark.hub
@pytest.mark.parametrize('index', range(len(PLAN)))
def test_readme_block_runs(index, workspace):
    work, env = workspace
    lang, code, subs = _plan_for(index)
    if subs is None:  # the set-up block: the environment is this one; its main job runs with tiny settings
        out = _run('bash', 'hybrid-zoo demo --epochs 1 --train-samples 200 --batch-size 32 --workers 0', work, env, 900)
        assert (work / 'runs' / 'demo' / 'demo_summary.json').is_file(), out
        return
    port = free_port()
    for old, new in subs:
        assert old in code, f'README block {index}: substitution {old!r} no longer matches'
        code = code.replace(old, new.format(port=port))
    out = _run(lang, code, work, env, 1200)
    if 'hub-server' in code:
        assert '10' in out.splitlines(), out  # the registered tag loaded the demo's 10-class model


def test_readme_stays_a_readme():
    """At most 15 KiB: reports, profiles and A/B tables live in docs/reports/, one link away."""
    assert README.stat().st_size <= 15 * 1024, f'README.md is {README.stat().st_size} bytes, expected <= 15 KiB'


@pytest.mark.parametrize('mode', ['L', 'RGB'])
def test_timm_block_pipeline_takes_a_real_image_file(mode, tmp_path):
    """The usage block's data pipeline, as printed, on an image file read from disk (grayscale, or RGB made gray)."""
    from PIL import Image

    _, code, _ = _plan_for(2)
    printed = "Image.new('L', (28, 28), 128)"
    assert printed in code and 'cfg = timm.data.resolve_data_config({}, model=model)' in code
    path = tmp_path / f'{mode}.png'
    pixels = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    Image.fromarray(pixels if mode == 'RGB' else pixels[..., 0], mode).save(path)
    code = code.replace(printed, f"Image.open({str(path)!r}).convert('L')")
    code += '\nassert logits.shape == (1, 10), logits.shape\n'
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    _run('python', code, tmp_path, env, 600)
