"""A documented command never rewrites the committed results: every command and tool that measures writes under
``runs/`` unless its output is named, answers ``--help`` without measuring, and a shortened recipe files its runs
under its own name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / 'model_cards' / 'results'
TOOLS = sorted(p.name for p in (ROOT / 'tools').glob('*.py'))


def _snapshot() -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in COMMITTED.iterdir()}


@pytest.mark.parametrize('command', ['bench', 'profile', 'stats', 'export', 'compare', 'front'])
def test_no_output_default_points_at_the_committed_results(command):
    import importlib

    parser = importlib.import_module(f'hybrid_zoo_cli.{command}').build_parser()
    defaults = [str(a.default) for a in parser._actions if a.dest in ('out_dir', 'results', 'out')]
    assert defaults and not [d for d in defaults if d.startswith('model_cards')], defaults


def test_compare_writes_under_runs_and_names_a_shortened_recipe(tmp_path, monkeypatch):
    import hybrid_zoo.benchmarks.compare as compare_mod
    from hybrid_zoo_cli.compare import main

    seen = {}

    def fake_compare(models, seeds, recipe, dataset_dir, work_dir, results, *args, **kwargs):
        seen.update(recipe=recipe, results=Path(results))
        return {'summary': {}, 'ranking_stable_across_seeds': True}

    monkeypatch.setattr(compare_mod, 'compare', fake_compare)
    cache = tmp_path / 'cache'
    (cache / 'fashion_mnist').mkdir(parents=True)
    (cache / 'fashion_mnist' / 'dataset_dict.json').write_text('{}')
    main(['--recipe', 'cpu64', '--models', 'test_resnet', '--embedded-cache', str(cache)])
    assert seen['results'] == Path('runs') / 'results' / 'fmnist-cpu64.json'
    main(['--recipe', 'cpu64', '--epochs', '1', '--train-samples', '300', '--embedded-cache', str(cache)])
    assert seen['recipe'].name == 'cpu64-e1-n300' and seen['results'].name == 'fmnist-cpu64-e1-n300.json'

    def fake_publish(files, *, record, **kwargs):
        seen['record'] = Path(record)
        return {}

    monkeypatch.setattr(compare_mod, 'publish', fake_publish)
    main(['--recipe', 'cpu64', '--models', 'test_resnet', '--embedded-cache', str(cache), '--publish'])
    assert seen['record'] == Path('runs') / 'results' / 'pretrained.json'  # the committed record only when named


@pytest.mark.parametrize('tool', TOOLS)
def test_every_tool_answers_help_without_measuring(tool):
    before = _snapshot()
    env = dict(os.environ, OMP_NUM_THREADS='1')
    done = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / tool), '--help'],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'usage:' in done.stdout
    assert _snapshot() == before
