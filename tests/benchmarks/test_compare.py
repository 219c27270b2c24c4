"""The identical-recipe comparison: every model trained the same way, tested once, resumable."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from hybrid_zoo.benchmarks.compare import RECIPES, compare, ranking_stable, summarize, swapped_pairs
from hybrid_zoo.models.variants import ARCH_VERSION

pytestmark = pytest.mark.train


def _row(model, seed, top1):
    return {'model': model, 'seed': seed, 'test_top1': top1}


def test_summary_and_ranking_stability():
    rows = [_row('a', 0, 90.0), _row('b', 0, 80.0), _row('a', 1, 92.0), _row('b', 1, 81.0)]
    s = summarize(rows)
    assert s['a'] == {'n': 2, 'mean': 91.0, 'std': pytest.approx(1.414, abs=1e-3), 'min': 90.0, 'max': 92.0}
    assert ranking_stable(rows)
    assert not ranking_stable(rows + [_row('a', 2, 70.0), _row('b', 2, 85.0)])
    assert swapped_pairs(rows) == []
    swaps = swapped_pairs(rows + [_row('c', 0, 85.0), _row('c', 1, 80.0)])  # c: behind a, between b's seeds
    assert swaps == [{'models': ['c', 'b'], 'mean_gap': 2.0}]


def test_compare_trains_tests_and_resumes(tmp_path):
    from hybrid_zoo.train.data import prepare_digits

    data = tmp_path / 'digits'
    prepare_digits(data)
    recipe = dataclasses.replace(RECIPES['smoke'], train_samples=300, batch_size=50)
    results = tmp_path / 'results' / 'fmnist-smoke.json'
    out = compare(['convformer_tiny', 'test_resnet'], [0], recipe, data, tmp_path / 'work', results, workers=0)
    assert {r['model'] for r in out['runs']} == {'convformer_tiny', 'test_resnet'}
    for r in out['runs']:
        assert 0 <= r['test_top1'] <= 100 and r['test_top5'] >= r['test_top1']
        assert r['gmacs'] > 0 and r['params_m'] > 0
    saved = json.loads(results.read_text())
    ours, peer = saved['models']['convformer_tiny'], saved['models']['test_resnet']
    assert ours['split'] == 'test' and len(ours['per_class']) == 10
    assert ours['train_loss'] > 0 and set(ours['layer_scale']) == {'conv', 'attention'}  # diagnostics of the fit
    assert peer['layer_scale'] is None and '| final train loss |' in results.with_suffix('.md').read_text()
    assert results.with_suffix('.md').exists() and results.with_suffix('.png').exists()
    # never validated on test: the trainer only saw the train split
    assert json.loads((tmp_path / 'work' / 'smoke' / 'train_only' / 'dataset_dict.json').read_text())['splits'] == [
        'train'
    ]
    row_file = tmp_path / 'work' / 'smoke' / 'convformer_tiny-s0' / 'compare_row.json'
    before = row_file.stat().st_mtime_ns
    again = compare(['convformer_tiny', 'test_resnet'], [0], recipe, data, tmp_path / 'work', results, workers=0)
    assert row_file.stat().st_mtime_ns == before  # finished runs are not trained again
    assert again['runs'] == out['runs']
    assert [r['architecture_version'] for r in again['runs']] == [ARCH_VERSION, None]  # ours, then the peer
    # rerunning some models (a changed architecture) keeps the other models' runs of the same recipe
    only_peer = compare(['test_resnet'], [0], recipe, data, tmp_path / 'work', results, workers=0)
    assert sorted(r['model'] for r in only_peer['runs']) == ['convformer_tiny', 'test_resnet']
    # a fresh checkout: the runs folder is gone, the committed results file is there; nothing is trained again
    shutil.rmtree(tmp_path / 'work')
    resumed = compare(['convformer_tiny', 'test_resnet'], [0], recipe, data, tmp_path / 'work', results, workers=0)
    assert resumed['runs'] == again['runs'] and not (tmp_path / 'work' / 'smoke' / 'test_resnet-s0').exists()
    redone = compare(['test_resnet'], [0], recipe, data, tmp_path / 'work', results, workers=0, rerun=True)
    assert (tmp_path / 'work' / 'smoke' / 'test_resnet-s0' / 'compare_row.json').exists()  # asked by name: trained
    assert sorted(r['model'] for r in redone['runs']) == ['convformer_tiny', 'test_resnet']
    # another recipe (a shortened one above all) never writes into this comparison's file
    before = results.read_text()
    with pytest.raises(ValueError, match=r"holds another comparison .* differs in \['batch_size', 'train_samples'\]"):
        compare(['test_resnet'], [0], RECIPES['smoke'], data, tmp_path / 'work', results, workers=0)
    assert results.read_text() == before


def test_a_rerun_keeps_other_runs_of_the_current_architecture_only(tmp_path):
    from hybrid_zoo.benchmarks.compare import _other_runs

    recipe = RECIPES['smoke']
    runs = [
        {'model': 'convformer_tiny', 'seed': 0, 'architecture_version': ARCH_VERSION},
        {'model': 'convformer_tiny', 'seed': 1, 'architecture_version': ARCH_VERSION},
        {'model': 'convformer_tiny', 'seed': 2},  # v1: the mid model changed in v2
        {'model': 'convformer_tiny_late', 'seed': 0},  # v1, but late did not change
        {'model': 'test_resnet', 'seed': 0},
    ]
    f = tmp_path / 'fmnist-smoke.json'
    f.write_text(json.dumps({'recipe': dataclasses.asdict(recipe), 'variant': None, 'model_kwargs': {}, 'runs': runs}))
    kept = _other_runs(f, [('convformer_tiny', 0)], recipe, None, None)
    assert [(r['model'], r['seed']) for r in kept] == [
        ('convformer_tiny', 1),
        ('convformer_tiny_late', 0),
        ('test_resnet', 0),
    ]
    assert _other_runs(f, [], dataclasses.replace(recipe, epochs=99), None, None) == []  # another recipe: nothing


def test_published_run_is_chosen_by_validation_from_the_current_architecture(tmp_path):
    from hybrid_zoo.benchmarks.compare import best_runs

    def row(seed, val, test, version=ARCH_VERSION):
        run = {'model': 'convformer_tiny', 'seed': seed, 'val_top1': val, 'test_top1': test, 'model_dir': f'r{seed}'}
        return run if version is None else {**run, 'architecture_version': version}

    runs = [row(0, 80.0, 85.0), row(1, 82.0, 83.0), row(2, 90.0, 90.0, version=1), row(3, 95.0, 95.0, None)]
    late = {**row(4, 70.0, 70.0, None), 'model': 'convformer_tiny_late'}  # v1 = v2 for late: its v1 runs count
    f = tmp_path / 'fmnist-x.json'
    f.write_text(json.dumps({'variant': None, 'recipe': {'img_size': 64}, 'runs': [*runs, late]}))
    best = best_runs([f], ['convformer_tiny', 'convformer_tiny_late'], img_size=64)
    assert best['convformer_tiny']['seed'] == 1  # the best validation, not the best test; never a v1 run
    assert best['convformer_tiny_late']['seed'] == 4


def test_design_variant_runs_in_its_own_folder(tmp_path):
    from hybrid_zoo.train.data import prepare_digits

    data = tmp_path / 'digits'
    prepare_digits(data)
    recipe = dataclasses.replace(RECIPES['smoke'], train_samples=200, batch_size=50)
    results = tmp_path / 'fmnist-smoke-wide.json'
    with pytest.raises(ValueError, match='need a variant name'):
        compare(['test_resnet'], [0], recipe, data, tmp_path / 'work', results, model_kwargs={'global_pool': 'max'})
    out = compare(
        ['test_resnet'],
        [0],
        recipe,
        data,
        tmp_path / 'work',
        results,
        0,
        model_kwargs={'global_pool': 'max'},
        variant='maxpool',
    )
    assert out['variant'] == 'maxpool' and out['runs'][0]['model_kwargs'] == {'global_pool': 'max'}
    run = tmp_path / 'work' / 'smoke-maxpool' / 'test_resnet-s0'
    assert json.loads((run / 'model' / 'config.json').read_text())['model_args']['global_pool'] == 'max'
    assert not (tmp_path / 'work' / 'smoke').exists()


def test_pick_advice_is_grounded_in_the_numbers():
    from hybrid_zoo.benchmarks.compare import pick_advice

    def entry(top1, std):
        return {'top1': top1, 'top1_std': std}

    data = {
        'models': {
            'convformer_tiny_early': entry(80.0, 0.3),
            'convformer_tiny': entry(81.0, 0.2),
            'convformer_tiny_late': entry(84.0, 0.4),
            'convnext_nano': entry(85.0, 0.1),
        }
    }
    bench = {'convformer_tiny_late': {'infer_img_s': 77.6}, 'convformer_tiny': {'infer_img_s': 62.4}}
    text = pick_advice(data, bench)
    assert '`convformer_tiny_late` is the most accurate placement (84.00%)' in text
    assert 'a real difference' in text and 'fastest (77.6 img/s' in text
    assert 'trails the best peer, `convnext_nano`, by 1.00 points' in text
    assert 'above the runner-up `convformer_tiny`' in text
    data['models']['convformer_tiny_late'] = entry(81.2, 0.4)
    assert 'treat as a tie' in pick_advice(data, bench)


def test_a_continuation_starts_from_the_finished_run_and_plots_both_schedules(tmp_path):
    from safetensors.torch import load_file

    from hybrid_zoo.train.data import prepare_digits

    data = tmp_path / 'digits'
    prepare_digits(data)
    first = dataclasses.replace(RECIPES['smoke'], train_samples=200, batch_size=50)
    # a learning rate too small to move a weight (the schedule's floor, 1e-6, bounds each Adam step near 1e-6): the
    # continued run's weights are the first run's, if it loaded them, and far from a fresh init's
    more = dataclasses.replace(first, name='smokex', continues='smoke', epochs=2, lr=1e-12, warmup_epochs=0.0)
    results = tmp_path / 'fmnist-smokex.json'
    with pytest.raises(FileNotFoundError, match=r"continues 'smoke': expected the finished smoke run of test_resnet"):
        compare(['test_resnet'], [0], more, data, tmp_path / 'work', results, workers=0)
    compare(['test_resnet'], [0], first, data, tmp_path / 'work', tmp_path / 'fmnist-smoke.json', workers=0)
    out = compare(['test_resnet'], [0], more, data, tmp_path / 'work', results, workers=0)
    row = out['runs'][0]
    parent = json.loads((tmp_path / 'work' / 'smoke' / 'test_resnet-s0' / 'compare_row.json').read_text())
    assert row['continues']['recipe'] == 'smoke' and row['continues']['test_top1'] == parent['test_top1']
    assert len(row['continues']['val_curve']) == first.epochs
    before = load_file(tmp_path / 'work' / 'smoke' / 'test_resnet-s0' / 'model' / 'model.safetensors')
    after = load_file(tmp_path / 'work' / 'smokex' / 'test_resnet-s0' / 'model' / 'model.safetensors')
    params = [k for k in before if not k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))]
    assert params and all(torch.allclose(before[k], after[k], atol=1e-4) for k in params)
    text = results.with_suffix('.md').read_text()
    assert 'starts from the exported weights of the finished `smoke` run' in text
    assert f'test top-1 {parent["test_top1"]:.2f} -> {row["test_top1"]:.2f}' in text
    assert results.with_name('fmnist-smokex-curve.png').exists()  # the first run's epoch, then these two


def test_a_results_file_from_before_a_recipe_field_keeps_its_runs(tmp_path):
    from hybrid_zoo.benchmarks.compare import _other_runs

    recipe = RECIPES['smoke']
    old = {k: v for k, v in dataclasses.asdict(recipe).items() if k != 'continues'}  # written before the field
    f = tmp_path / 'fmnist-smoke.json'
    f.write_text(json.dumps({'recipe': old, 'variant': None, 'model_kwargs': {}, 'runs': [_row('test_resnet', 1, 9)]}))
    assert [r['seed'] for r in _other_runs(f, [('test_resnet', 0)], recipe, None, None)] == [1]


def test_front_recipe_draws_a_class_balanced_pool_that_leaves_its_training_size():
    import numpy as np

    from hybrid_zoo.benchmarks.compare import RECIPES, balanced_pool

    recipe = RECIPES['front96']
    labels = np.random.default_rng(3).integers(0, 10, size=60_000)
    rows = balanced_pool(labels, recipe)
    counts = np.bincount(labels[rows], minlength=10)
    assert len(set(counts)) == 1  # the same number of images of every class
    assert len(rows) * (1 - recipe.val_fraction) >= recipe.train_samples
    assert rows == sorted(set(rows)) and rows == balanced_pool(labels, recipe)  # no repeats, the same every time
    with pytest.raises(ValueError, match='class 1 has 5 images, expected >= 667'):
        balanced_pool(np.array([c for c in range(10) for _ in range(5 if c == 1 else 1000)]), recipe)


@pytest.mark.parametrize(('img_size', 'windows'), [(224, (7, 7, 14, 7)), (96, (7, 12, 6, 3)), (64, (7, 8, 4, 2))])
def test_tinyvit_windows_fit_the_maps(img_size, windows):
    from hybrid_zoo.benchmarks.peers import fitted_kwargs

    assert fitted_kwargs('tiny_vit_5m_224', img_size) == {'window_sizes': windows}  # timm's own at 224 px
    assert fitted_kwargs('fastvit_t12', img_size) == {}


def test_every_default_model_of_every_recipe_builds_with_the_options_its_runs_get(tmp_path):
    """Before hours of training: each model a comparison runs by default (peers and ours, tiny and small fronts)
    builds from the very TrainConfig its run gets (a constructor that refuses one of the recipe's arguments, as
    RepViT refuses drop_path_rate, used to stop a comparison at that model)."""
    from hybrid_zoo.benchmarks.compare import RECIPES, train_config
    from hybrid_zoo.benchmarks.peers import FMNIST_PEERS, FRONT_PEERS, FRONT_PEERS_SMALL, takes_drop_path
    from hybrid_zoo.models.pretrained import FMNIST_MODELS
    from hybrid_zoo.train.loop import build_model

    seen = set()
    for recipe in RECIPES.values():
        peers = (*FRONT_PEERS, *FRONT_PEERS_SMALL) if recipe.fit_peer_windows else FMNIST_PEERS
        for model in (*peers, *FMNIST_MODELS):
            if (model, recipe.img_size, recipe.fit_peer_windows) in seen:
                continue
            seen.add((model, recipe.img_size, recipe.fit_peer_windows))
            cfg = train_config(model, seed=0, recipe=recipe, dataset=tmp_path, out=tmp_path / model)
            net = build_model(cfg, num_classes=10)
            with torch.no_grad():
                assert net.eval()(torch.randn(1, recipe.in_chans, recipe.img_size, recipe.img_size)).shape == (1, 10)
            assert (cfg.drop_path_rate is None) == (model == 'repvit_m1_0'), (model, cfg.drop_path_rate)
    assert not takes_drop_path('repvit_m1_0') and takes_drop_path('convnext_nano')
