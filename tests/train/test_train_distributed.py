"""Data parallel training: 2 CPU processes (gloo, via ``accelerate.debug_launcher``) match 1 process.

With the same global batch, no augmentation and a model without BatchNorm, the two processes see exactly the samples
one process sees (Accelerate hands consecutive batches of one seeded permutation to alternating ranks), and DDP
averages their gradients: the weights must agree up to float summation order. Gradient accumulation is the same
computation in time instead of space, so it is checked against the same reference.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import safetensors.torch
import torch

from hybrid_zoo.train import data
from hybrid_zoo.train import loop as T
from hybrid_zoo.train.loop import TrainConfig, fit

pytestmark = pytest.mark.train


def _rank_worker(cfg: TrainConfig, report_dir: str) -> None:
    """Runs in each forked process: 1 epoch, stop, resume for epoch 2, and report what this rank ended with."""
    from accelerate.state import AcceleratorState, PartialState

    # GNU OpenMP cannot run a parallel region in a child forked after the parent used one (it waits forever on the
    # parent's thread team); one thread per rank keeps torch out of OpenMP, and 2 ranks x 1 thread fill the 2 cores
    os.environ['OMP_NUM_THREADS'] = '1'  # else accelerate raises the thread count again for MULTI_CPU
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)  # the fork inherited the parent's 1-process state
    state = PartialState(cpu=True)  # cpu=True: the gloo process group (without it accelerate stays single-process)
    last_model = {}
    real_validate = T.validate

    def spy(run):
        last_model['weights'] = {
            k: v.detach().clone() for k, v in run.accelerator.unwrap_model(run.model).state_dict().items()
        }
        return real_validate(run)

    T.validate = spy  # this process only (forked)
    first = fit(dataclasses.replace(cfg, stop_after_epoch=1))
    result = fit(dataclasses.replace(cfg, resume='auto'))
    torch.save(last_model['weights'], f'{report_dir}/rank{state.process_index}.pt')
    report = {'world': state.num_processes, 'type': str(state.distributed_type), 'first': first, 'result': result}
    with open(f'{report_dir}/rank{state.process_index}.json', 'w') as f:
        json.dump(report, f, default=str)


def test_two_processes_and_accumulation_match_one_process(tmp_path):
    from accelerate import debug_launcher

    data.prepare_digits(tmp_path / 'digits')
    common = dict(
        model='test_convnext',
        dataset=str(tmp_path / 'digits'),
        img_size=32,
        in_chans=1,
        epochs=2,
        workers=0,
        max_train_samples=64,
        max_val_samples=64,
        lr=3e-3,
        warmup_epochs=0.25,
        no_aug=True,
        ema=True,
    )
    reference = fit(TrainConfig(**common, batch_size=16, output_dir=str(tmp_path / 'one')))
    accumulated = fit(TrainConfig(**common, batch_size=8, grad_accum_steps=2, output_dir=str(tmp_path / 'accum')))

    (tmp_path / 'reports').mkdir()
    ddp_cfg = TrainConfig(**common, batch_size=8, output_dir=str(tmp_path / 'two'))
    debug_launcher(_rank_worker, args=(ddp_cfg, str(tmp_path / 'reports')), num_processes=2)

    reports = [json.loads((tmp_path / 'reports' / f'rank{r}.json').read_text()) for r in (0, 1)]
    assert all(r['world'] == 2 and 'MULTI_CPU' in r['type'] for r in reports)
    assert reports[0]['first']['epochs_done'] == 1 and reports[0]['result']['epochs_done'] == 2
    same = ('top1', 'top5', 'loss', 'per_class', 'ema_top1', 'num_updates', 'best_top1')
    assert [reports[0]['result'][k] for k in same] == [reports[1]['result'][k] for k in same]  # gathered metrics
    rank0, rank1 = (torch.load(tmp_path / 'reports' / f'rank{r}.pt') for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the replicas identical

    one = safetensors.torch.load_file(str(tmp_path / 'one' / 'model' / 'model.safetensors'))
    for name, run in (('2 processes', tmp_path / 'two'), ('accumulation', tmp_path / 'accum')):
        other = safetensors.torch.load_file(str(run / 'model' / 'model.safetensors'))
        for k in one:
            torch.testing.assert_close(other[k], one[k], atol=2e-4, rtol=1e-3, msg=f'{name}: {k}')
    for result in (reports[0]['result'], accumulated):
        assert result['num_updates'] == reference['num_updates'] == 8
        assert abs(result['top1'] - reference['top1']) <= 100 / 64 + 1e-6  # at most one image flips
    meta = json.loads((tmp_path / 'two' / 'checkpoints' / 'last' / 'meta.json').read_text())
    assert meta['world_size'] == 2 and meta['epoch'] == 2
    assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints' / 'last').glob('random_states_*')) == [
        'random_states_0.pkl',
        'random_states_1.pkl',
    ]
