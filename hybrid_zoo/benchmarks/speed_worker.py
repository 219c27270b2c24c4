"""The speed benchmark's worker: one (model, round) in a fresh process, started by ``hybrid_zoo.benchmarks.speed``
as ``python -m hybrid_zoo.benchmarks.speed_worker TASK.json``; it writes what it measured after every phase, so a
killed or crashed worker still reports, and imports torch and the models only here."""

from __future__ import annotations

import contextlib
import copy
import fcntl
import gc
import json
import logging
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.models import reparameterize_model
from torch import nn

from hybrid_zoo.atomic import write_json_atomic
from hybrid_zoo.benchmarks.speed_report import REFERENCE
from hybrid_zoo.deploy import DeployError, build
from hybrid_zoo.factory import create_model
from hybrid_zoo.flops import count_macs, count_params
from hybrid_zoo_config.bench import MALLOC_NO_TRIM, BenchConfig

logger = logging.getLogger(__name__)

_ENV_RECORDED = (*MALLOC_NO_TRIM, 'OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY', 'KMP_BLOCKTIME')


class _Recorder:
    """The worker's result file, rewritten after every phase: a killed worker still reports what it measured."""

    def __init__(self, path: str, data: dict) -> None:
        self.path, self.data = Path(path), dict(data)

    def update(self, **values: Any) -> None:
        self.data.update(values)
        write_json_atomic(self.path, self.data)


class _Phases:
    """Seconds spent per worker phase, recorded with the results (where a run's time goes)."""

    def __init__(self, rec: _Recorder) -> None:
        self.rec, self.last = rec, time.perf_counter()
        self.rec.data.setdefault('phase_s', {})

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.rec.data['phase_s'][name] = round(now - self.last, 2)
        self.rec.update()  # on disk now: a native crash in the next phase still shows where it happened
        self.last = now


def _process_age() -> float | None:
    """Seconds since this process started (Linux), i.e. interpreter start plus the torch / timm imports."""
    try:
        with open('/proc/self/stat') as f:
            start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])  # field 22, starttime
        with open('/proc/uptime') as f:
            return round(float(f.read().split()[0]) - start_ticks / os.sysconf('SC_CLK_TCK'), 2)
    except (OSError, ValueError, IndexError):
        return None


class _CpuProbe:
    """Share of the machine's CPU that other processes used during a sample (Linux ``/proc/stat``, else None)."""

    def __init__(self) -> None:
        self.enabled = os.path.exists('/proc/stat')
        self.hz = os.sysconf('SC_CLK_TCK') if self.enabled else 100
        self._start: tuple[int, int, float] | None = None

    @staticmethod
    def _read() -> tuple[int, int, float]:
        with open('/proc/stat') as f:
            ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        own = os.times()
        return sum(ticks), sum(ticks) - ticks[3] - ticks[4], own.user + own.system

    def start(self) -> None:
        self._start = self._read() if self.enabled else None

    def stop(self) -> float | None:
        if self._start is None:
            return None
        total, busy, own = (b - a for a, b in zip(self._start, self._read(), strict=True))
        if total < 10:  # under 10 ticks the clock-tick counts say nothing
            return None
        return round(max(0.0, (busy / self.hz - own) / (total / self.hz)), 3)


class _Device:
    """Device, autocast, synchronisation and peak memory for the worker."""

    def __init__(self, config: BenchConfig) -> None:

        self.torch = torch
        self.device = torch.device(config.device)
        self.cuda = self.device.type == 'cuda'
        self.amp = config.amp
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once

    def autocast(self):
        if self.amp == 'none':
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def peak_mem_gb(self) -> float:
        if self.cuda:
            return self.torch.cuda.max_memory_allocated(self.device) / 1e9

        scale = 1 if sys.platform == 'darwin' else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1e9


@contextlib.contextmanager
def _timing_lock(path: str | None):
    """With several workers at once (``--jobs``), only one of them runs a timed section at a time."""
    if path is None:
        yield
        return

    with open(path) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _timed(fns: dict[str, Callable[[], Any]], warmup: int, iters: int, dev: _Device, probe: _CpuProbe) -> dict:
    """Warm every function up, then time them in alternating order (ABBA...), so drift hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    dev.sync()
    keys = list(fns)
    out: dict[str, dict[str, list]] = {k: {'t': [], 'busy': []} for k in keys}
    gc.collect()
    gc.disable()
    try:
        for i in range(iters):
            for key in keys if i % 2 == 0 else keys[::-1]:
                probe.start()
                t0 = time.perf_counter()
                fns[key]()
                dev.sync()
                out[key]['t'].append(time.perf_counter() - t0)
                out[key]['busy'].append(probe.stop())
    finally:
        gc.enable()
    return out


def _create_model(name: str, config: BenchConfig):

    # img_size reaches only fixed-input-size models (position tables / windows are sized at construction)
    return create_model(name, img_size=config.img_size, num_classes=config.num_classes)


def _deploy(model, config: BenchConfig) -> tuple[Any, bool, str | None]:
    """The inference model: reparameterized (BN and branches folded) when asked and supported."""

    hooks = ('fuse', 'reparameterize', 'switch_to_deploy')
    supported = any(m is not model and any(callable(getattr(m, h, None)) for h in hooks) for m in model.modules())
    if not (config.reparam and supported):
        return model, False, None
    try:
        return reparameterize_model(model.eval()), True, None
    except Exception as e:  # a module whose ``fuse`` is not timm's hook (e.g. a submodule named fuse)
        return model, False, f'{type(e).__name__}: {e}'


def _memory_format(layout: str):

    return torch.channels_last if layout == 'channels_last' else torch.contiguous_format


def _measure_model(task: dict, config: BenchConfig, rec: _Recorder, dev: _Device) -> None:
    """Build, count (first round), then time inference, batch-1 latency, compiled inference and a training step."""

    probe, lock, phases = _CpuProbe(), task.get('lock_path'), _Phases(rec)
    torch.manual_seed(0)
    size = (3, config.img_size, config.img_size)
    model = _create_model(task['name'], config).eval()
    if task.get('train_only'):  # the NCHW retry after a crash in the channels_last training step
        model.to(dev.device)
        _measure_training(model, config, rec, dev, probe, lock)
        phases.done('train')
        return
    run_model, reparameterized, reparam_error = _deploy(model, config)
    phases.done('build')
    if task['count']:
        macs = count_macs(model, size)
        run_macs = count_macs(run_model, size) if reparameterized else macs
        info = {'params': count_params(model), 'gmacs': macs.gmacs, 'attention_gmacs': macs.attention_gmacs}
        info.update(gmacs_run=run_macs.gmacs, reparameterized=reparameterized, reparam_error=reparam_error)
        rec.update(info=dict(info, fixed_input_size=bool(model.pretrained_cfg.get('fixed_input_size'))))
        phases.done('count')
    model.to(dev.device)
    run_model.to(dev.device)
    with _timing_lock(lock):
        best_net, best_input = _measure_inference(run_model, task, config, rec, dev, probe)
    phases.done('infer')
    if task['compile']:
        _measure_compiled(best_net, best_input, config, rec, dev, probe, lock)
        phases.done('compile')
    if len(config.modes) > 1:
        _measure_modes(best_net, best_input, config, rec, dev, probe, lock)
        phases.done('modes')
    elif task.get('compile_skipped'):
        rec.update(compile={'skipped': task['compile_skipped']})
    del run_model, best_net, best_input
    if config.train:
        _measure_training(model, config, rec, dev, probe, lock)
        phases.done('train')


def _forward(net, inp, dev: _Device) -> Callable[[], None]:

    def run() -> None:
        with torch.inference_mode(), dev.autocast():
            net(inp)

    return run


def _measure_inference(run_model, task: dict, config: BenchConfig, rec: _Recorder, dev: _Device, probe: _CpuProbe):
    """Both layouts timed in alternation (paired), then latency in the faster one; returns that model and input."""

    size = (3, config.img_size, config.img_size)
    layouts = list(config.layouts) if task['round'] % 2 == 0 else list(config.layouts)[::-1]
    x = torch.randn(config.batch_size, *size, device=dev.device)
    nets = {
        lay: (run_model if i == 0 else copy.deepcopy(run_model)).to(memory_format=_memory_format(lay))
        for i, lay in enumerate(layouts)
    }
    inputs = {lay: x.contiguous(memory_format=_memory_format(lay)) for lay in layouts}
    fns = {lay: _forward(nets[lay], inputs[lay], dev) for lay in layouts}
    infer = _timed(fns, config.warmup, config.iters, dev, probe)
    best = max(layouts, key=lambda lay: len(infer[lay]['t']) / sum(infer[lay]['t']))
    latency = None
    if config.latency:
        x1 = torch.randn(config.latency_batch_size, *size, device=dev.device)
        run = _forward(nets[best], x1.contiguous(memory_format=_memory_format(best)), dev)
        latency = dict(_timed({'b1': run}, config.latency_warmup, config.latency_iters, dev, probe)['b1'], layout=best)
    rec.update(infer=infer, latency=latency, peak_mem_infer_gb=dev.peak_mem_gb())
    return nets[best], inputs[best]


def _measure_compiled(net, inp, config: BenchConfig, rec: _Recorder, dev: _Device, probe: _CpuProbe, lock) -> None:

    try:
        compiled = _forward(torch.compile(net), inp, dev)
        t0 = time.perf_counter()
        compiled()  # the first call compiles, outside the timing lock
        dev.sync()
        compile_s = time.perf_counter() - t0
        with _timing_lock(lock):
            timed = _timed({'c': compiled}, config.warmup, config.iters, dev, probe)['c']
        rec.update(compile=dict(timed, compile_s=compile_s))
    except Exception as e:  # inductor needs a C++ compiler on CPU; one model failing must not lose the rest
        rec.update(compile={'error': f'{type(e).__name__}: {e}'[:500]})
    torch._dynamo.reset()


def _measure_modes(net, inp, config: BenchConfig, rec: _Recorder, dev: _Device, probe: _CpuProbe, lock) -> None:
    """Each deployment mode built from the folded eager model (outside the timing lock), checked against it, then
    timed in alternation with it. int8 is calibrated on random batches here: speed does not depend on the ranges
    (``hybrid-zoo export --int8`` calibrates on real images and measures the accuracy)."""
    out: dict[str, dict] = {'eager': {}}
    fns = {'eager': _forward(net, inp, dev)}
    calibration = [torch.randn_like(inp) for _ in range(2)]
    with tempfile.TemporaryDirectory(prefix='hz-modes-') as tmp:
        for mode in config.modes:
            if mode == 'eager':
                continue
            if dev.device.type != 'cpu':
                out[mode] = {'error': f'{mode} is a CPU deployment mode; not timed on {dev.device}'}
                continue
            # on disk before the build: a worker killed inside it (out of memory) still says which mode it was
            rec.update(modes={**out, mode: {'error': f'the worker was killed while building {mode}'}})
            try:
                d = build(copy.deepcopy(net), mode, inp.cpu(), calibration, config.threads, Path(tmp) / mode)
            except (DeployError, ValueError) as e:
                out[mode] = {'error': str(e)[:500]}
                continue
            out[mode] = {'build_s': d.build_s, 'max_abs_diff': d.max_abs_diff, 'file_mb': d.file_mb}
            fns[mode] = lambda d=d: d.run(inp)
        with _timing_lock(lock):
            timed = _timed(fns, config.warmup, config.iters, dev, probe)
    for mode, samples in timed.items():
        out.setdefault(mode, {}).update(samples)
    rec.update(modes=out)
    torch._dynamo.reset()


def training_step(model, x, y, autocast: Callable = contextlib.nullcontext) -> Callable[[], None]:
    """The benchmark's training step on ``(x, y)``: forward, cross-entropy, backward, SGD with momentum.

    A model that returns several outputs in training mode (distillation heads) is scored on the first.
    """

    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = model(x)
            out = out[0] if isinstance(out, tuple | list) else out
            loss = F.cross_entropy(out.float(), y)
        loss.backward()
        opt.step()

    return step


def _measure_training(model, config: BenchConfig, rec: _Recorder, dev: _Device, probe: _CpuProbe, lock) -> None:
    """Forward, backward and an SGD step (:func:`training_step`) on the model as built (not reparameterized)."""

    fmt = _memory_format(config.train_layout)
    model.train().to(memory_format=fmt)
    x = torch.randn(config.train_batch_size, 3, config.img_size, config.img_size, device=dev.device)
    x = x.contiguous(memory_format=fmt)
    y = torch.randint(0, config.num_classes, (config.train_batch_size,), device=dev.device)
    step = training_step(model, x, y, dev.autocast)
    with _timing_lock(lock):
        train = _timed({'train': step}, config.train_warmup, config.train_iters, dev, probe)['train']
    rec.update(train=dict(train, layout=config.train_layout), peak_mem_train_gb=dev.peak_mem_gb())


def _measure_reference(task: dict, config: BenchConfig, rec: _Recorder, dev: _Device) -> None:
    """The machine's GEMM rates: a channels_last 1x1 conv (oneDNN on CPU) and, for contrast, torch.mm."""

    b, n = config.reference_batch, config.reference_mm_size
    conv = nn.Conv2d(1024, 1024, 1, bias=False).to(dev.device, memory_format=torch.channels_last).eval()
    x = torch.randn(b, 1024, 28, 28, device=dev.device).contiguous(memory_format=torch.channels_last)
    m1, m2 = torch.randn(n, n, device=dev.device), torch.randn(n, n, device=dev.device)

    def run_conv() -> None:
        with torch.inference_mode(), dev.autocast():
            conv(x)

    def run_mm() -> None:
        with torch.inference_mode(), dev.autocast():
            torch.mm(m1, m2)

    with _timing_lock(task.get('lock_path')):
        timed = _timed({'conv': run_conv, 'mm': run_mm}, 2, config.reference_iters, dev, _CpuProbe())
    timed['conv']['flop'] = 2 * b * 28 * 28 * 1024 * 1024
    timed['mm']['flop'] = 2 * n**3
    rec.update(reference=timed)


def _worker_main(task_path: str) -> int:
    task = json.loads(Path(task_path).read_text())
    config = BenchConfig.from_dict(task['config'])

    torch.set_num_threads(config.threads)
    rec = _Recorder(
        task['result_path'],
        {
            'env': {k: os.environ.get(k) for k in _ENV_RECORDED},
            'threads': torch.get_num_threads(),
            'phase_s': {'startup': _process_age()},
        },
    )
    try:
        import hybrid_zoo  # noqa: F401  registers our models

        for module in config.import_modules:
            __import__(module)
        dev = _Device(config)
        if dev.cuda:
            rec.update(device_name=torch.cuda.get_device_name(dev.device))
        measure_fn = _measure_reference if task['name'] == REFERENCE else _measure_model
        measure_fn(task, config, rec, dev)
        rec.update(done=True)
    except Exception as e:
        traceback.print_exc()
        rec.update(error=f'{type(e).__name__}: {e}'[:500])
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(_worker_main(sys.argv[1]))
