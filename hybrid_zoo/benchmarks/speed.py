"""Side-by-side speed benchmark of timm models, ours and any others, in one process tree.

The parent process only schedules and summarises; every measurement runs in a worker subprocess
(``speed_worker``), one per (model, round). Rounds are interleaved: round k measures every model once (the machine's reference GEMM
rates first), odd rounds in reverse order, so drift and position effects hit all models alike.

Why a fresh worker per (model, round) and not one long-lived worker per model: an idle worker that has
imported torch and timm holds about 0.4 GB of private memory, and a worker that keeps glibc from trimming
(below) keeps its whole peak, 1.5-7 GB here; 25 live workers do not fit in a 24 GiB machine. Starting
and building again costs about 4 s per (model, round), some 15% of a full run (warm-up is needed every
round either way), and buys isolation: a crash, an out-of-memory kill or a hang loses one sample, and
every sample starts from the same process state.

Workers are spawned with ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` set high (glibc reads
them when the process starts). By default glibc hands large freed blocks back to the kernel and the next
batch page-faults them in again, so a model's speed depends on what ran before it (measured on the
project machine: the same model at 14 img/s first in a process, 23.7 later); with the setting results are
stable and match a long-running inference server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path

import timm
import torch

from hybrid_zoo import __version__
from hybrid_zoo.benchmarks.peers import PEER_SETS
from hybrid_zoo.benchmarks.results import cpu_name, machine_meta
from hybrid_zoo.benchmarks.speed_report import REFERENCE, evaluate_targets, runtime_versions, summarise
from hybrid_zoo.logs import progress as progress_bar
from hybrid_zoo.models import MODEL_NAMES
from hybrid_zoo.models.variants import ARCH_VERSION, SIZE_OF
from hybrid_zoo_config.bench import LAYOUTS, MALLOC_NO_TRIM, BenchConfig, allocator_label, default_threads

__all__ = [
    'LAYOUTS',
    'MALLOC_NO_TRIM',
    'PEER_SETS',
    'BenchConfig',
    'allocator_label',
    'default_threads',
    'exec_with_no_trim',
    'measure',
    'resolve_models',
    'size_class',
    'worker_env',
]

logger = logging.getLogger(__name__)


def exec_with_no_trim(args: Sequence[str]) -> None:
    """Replace this process by ``python *args`` with :data:`MALLOC_NO_TRIM` set, unless it is set already.

    glibc reads the variables once, at start-up, so a process that wants the setting must be started with it.
    """
    if any(os.environ.get(k) != v for k, v in MALLOC_NO_TRIM.items()):
        os.execvpe(sys.executable, [sys.executable, *args], dict(os.environ, **MALLOC_NO_TRIM))


def size_class(name: str) -> str | None:
    """'tiny' / 'small' / 'base' for our nine and the built-in peers, None for other models."""

    if name in SIZE_OF:
        return SIZE_OF[name]
    return next((size for size, peers in PEER_SETS.items() if name in peers), None)


def resolve_models(models: Sequence[str] = (), *, family: bool = False, peers: Sequence[str] = ()) -> list[str]:
    """The models of a run: ours (when no ``models`` are named, or ``family``), ``models``, then peer sets.

    ``peers`` names sets of :data:`PEER_SETS` or ``'all'``. Duplicates are dropped, first place kept.
    """

    names = [*(MODEL_NAMES if family or not models else ()), *models]
    for key in peers:
        if key != 'all' and key not in PEER_SETS:
            raise ValueError(f'unknown peer set {key!r}; expected one of {[*PEER_SETS, "all"]}')
        for size in PEER_SETS if key == 'all' else (key,):
            names += PEER_SETS[size]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------------------
# Parent: schedule workers, collect, summarise


def worker_env(config: BenchConfig) -> dict[str, str]:
    """The environment a worker starts with: allocator setting, thread counts, this package importable."""
    env = dict(os.environ)
    for key in MALLOC_NO_TRIM:
        env.pop(key, None)  # --no-malloc-tuning compares against glibc's defaults, whatever the shell had
    if config.malloc_tuning:
        env.update(MALLOC_NO_TRIM)
    env.update(OMP_NUM_THREADS=str(config.threads), MKL_NUM_THREADS=str(config.threads))
    if config.jobs > 1:  # each worker's inductor compile pool gets its share of the cores
        env.setdefault('TORCHINDUCTOR_COMPILE_THREADS', str(max(1, (os.cpu_count() or 1) // config.jobs)))
    package_root = str(Path(__file__).resolve().parents[2])
    env['PYTHONPATH'] = os.pathsep.join(p for p in (package_root, env.get('PYTHONPATH')) if p)
    return env


class _Workers:
    """Runs worker subprocesses (each in its own process group) and kills the ones still running on exit."""

    def __init__(self, env: dict[str, str], tmpdir: Path, lock: Path | None = None) -> None:
        self.env, self.tmpdir, self.lock_path = env, tmpdir, lock
        self.running: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.count = 0

    def run(self, task: dict, deadline: float) -> dict:
        with self.lock:
            self.count += 1
            stem = self.tmpdir / f'{self.count:04d}'
        task = dict(
            task, result_path=str(stem.with_suffix('.result.json')), lock_path=self.lock_path and str(self.lock_path)
        )
        stem.with_suffix('.task.json').write_text(json.dumps(task))
        cmd = [sys.executable, '-m', 'hybrid_zoo.benchmarks.speed_worker', str(stem.with_suffix('.task.json'))]
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        with self.lock:
            self.running[proc.pid] = proc
        timed_out = False
        try:
            log, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self._kill(proc)
            log, _ = proc.communicate()
        finally:
            with self.lock:
                self.running.pop(proc.pid, None)
        result_path = Path(task['result_path'])
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        if timed_out:
            result['error'] = f'timed out after {time.monotonic() - start:.0f} s'
        elif proc.returncode != 0 and 'error' not in result:
            result['error'] = f'worker exited with status {proc.returncode}' + (
                ' (SIGKILL: killed from outside, e.g. by the kernel when memory ran out)'
                if proc.returncode == -9
                else ''
            )
        result.update(name=task['name'], round=task['round'], wall_s=round(time.monotonic() - start, 2))
        result['log_tail'] = '\n'.join((log or '').strip().splitlines()[-15:]) if 'error' in result else None
        if _crashed_in_training(result, proc.returncode, timed_out, task):
            result = self._train_nchw(task, result, proc.returncode, deadline)
        return result

    def _train_nchw(self, task: dict, result: dict, returncode: int, deadline: float) -> dict:
        """Re-measure only the training step, in NCHW, after the channels_last one killed the worker.

        A native crash (torch 2.14's oneDNN faults in the backward of a 1x1 stride-2 conv over 3-8 input
        channels with channels_last weights, as in the FastViT stems) cannot be caught inside the worker;
        the inference numbers it recorded stand and the row says which layout its training number is from.
        """
        config = dict(task['config'], train_layout='nchw')
        retry = self.run(dict(task, config=config, train_only=True), deadline)
        why = f'channels_last training step killed the worker ({_signal_name(returncode)}); trained in NCHW'
        if retry.get('error') or not retry.get('train'):
            result['error'] = f'{result["error"]}; NCHW retry: {retry.get("error", "no training result")}'
            return result
        logger.warning('%s round %d: %s', task['name'], task['round'], why)
        result.update(train=retry['train'], peak_mem_train_gb=retry.get('peak_mem_train_gb'), train_fallback=why)
        result.pop('error', None)
        result['log_tail'] = None
        return result

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and its own children (inductor compile pool)

    def kill_all(self) -> None:
        with self.lock:
            for proc in list(self.running.values()):
                self._kill(proc)


def _crashed_in_training(result: dict, returncode: int | None, timed_out: bool, task: dict) -> bool:
    """The worker died from a signal in a channels_last training step (every phase before it recorded)."""
    config = task.get('config') or {}
    phases = result.get('phase_s') or {}
    before = 'compile' if task.get('compile') else 'infer'  # the phase that runs just before training
    return (
        not timed_out
        and returncode is not None
        and returncode < 0
        and bool(result.get('infer'))
        and before in phases
        and not result.get('train')
        and config.get('train', True)
        and config.get('train_layout') == 'channels_last'
        and not task.get('train_only')
    )


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f'status {returncode}'


def _tasks(models: Sequence[str], config: BenchConfig) -> list[dict]:
    tasks = []
    for r in range(config.rounds):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        if config.reference:
            tasks.append({'name': REFERENCE, 'round': r, 'count': False, 'compile': False})
        tasks += [{'name': m, 'round': r, 'count': r == 0, 'compile': config.compile} for m in order]
    return tasks


class _Budget:
    """Decides, before a worker starts, whether it can still finish within ``time_budget`` seconds.

    When time runs short, compilation is dropped first (it is the costly part), then whole models.
    """

    def __init__(self, seconds: float | None, start: float) -> None:
        self.deadline = None if seconds is None else start + seconds
        self.durations: dict[bool, list[float]] = {False: [], True: []}
        self.skipped: list[str] = []

    def estimate(self, compiled: bool) -> float:
        seen = self.durations[compiled] or self.durations[False]
        return statistics.median(seen) if seen else (90.0 if compiled else 20.0)

    def admit(self, task: dict) -> dict | None:
        if self.deadline is None:
            return task
        left = self.deadline - time.monotonic()
        if task['compile'] and left < self.estimate(True):
            task = dict(task, compile=False, compile_skipped='time budget')
        if left < self.estimate(False):
            self.skipped.append(f'{task["name"]} round {task["round"] + 1}: time budget')
            return None
        return task

    def record(self, task: dict, wall_s: float) -> None:
        self.durations[bool(task['compile'])].append(wall_s)


def measure(
    models: Sequence[str],
    config: BenchConfig | None = None,
    *,
    progress: bool = True,
    on_update: Callable[[dict], None] | None = None,
    command: str | None = None,
) -> dict:
    """Measure ``models`` side by side and return the result document (nothing is printed or written).

    Args:
        models: timm model names (registered in this process and, through ``config.import_modules``, in the
            workers); ours are registered by ``import hybrid_zoo``.
        config: Measurement settings; defaults to :class:`BenchConfig`'s.
        progress: Show progress (rate, ETA) on stderr: a bar on a terminal, a line now and then in a file.
        on_update: Called with the partial document after every worker, e.g. to save it as the run goes.
        command: The command line that started the run, recorded in ``meta.run.command``.

    Returns:
        ``{'schema', 'meta', 'reference', 'models': {name: row}, 'rounds', 'targets', 'raw'}``: one row of
        scalars per model (see :func:`summarise`), per-round values, the issue's targets evaluated on the
        models measured, and every worker's samples.
    """

    config = config or BenchConfig()
    for module in config.import_modules:
        __import__(module)
    unknown = [m for m in models if not timm.is_model(m)]
    if unknown:
        raise ValueError(f'not timm models: {unknown} (is the package that registers them in --import?)')
    if config.jobs > 1 and config.device == 'cpu':
        logger.warning('--jobs %d on CPU: only the timed sections are serialised; builds disturb them', config.jobs)
    start = time.monotonic()
    meta = _meta(config, __version__)
    meta['run'] = {'command': command}
    raw: dict[str, list[dict]] = {name: [] for name in ([REFERENCE] if config.reference else [])}
    raw.update({m: [] for m in models})
    pending = deque(_tasks(models, config))
    budget = _Budget(config.time_budget, start)
    labels = {
        m: {
            'size': size_class(m),
            'ours': m in MODEL_NAMES,
            **({'architecture_version': ARCH_VERSION} if m in MODEL_NAMES else {}),
        }
        for m in models
    }

    def document(final: bool) -> dict:
        doc = summarise(raw, asdict(config), meta, labels)
        failed = sorted(name for name, results in raw.items() if any(r.get('error') for r in results))
        doc['meta']['run'].update(
            complete=final and not failed and not budget.skipped,
            wall_s=round(time.monotonic() - start, 1),
            failed=failed,
            skipped=list(budget.skipped),
        )
        # the targets are CPU targets (fp32, batch 32 at 224 px); other CPU settings get them as a smoke check
        on_cpu = config.device == 'cpu'
        doc['targets'] = evaluate_targets(doc['models'], doc['reference'], doc['rounds']) if on_cpu else []
        return doc

    bar = _progress(len(pending), progress)

    def collect(result: dict) -> None:
        raw[result['name']].append(result)
        bar.update(1)
        if on_update is not None:
            on_update(document(final=False))

    with tempfile.TemporaryDirectory(prefix='hz-bench-') as tmp:
        lock = Path(tmp) / 'timing.lock' if config.jobs > 1 else None
        if lock is not None:
            lock.touch()
        try:
            _run_tasks(pending, config, _Workers(worker_env(config), Path(tmp), lock), budget, bar, collect)
        finally:
            bar.close()
    return document(final=True)


def _run_tasks(
    pending: deque[dict], config: BenchConfig, workers: _Workers, budget: _Budget, bar, collect: Callable[[dict], None]
) -> None:
    """Start the tasks in order, at most ``config.jobs`` at once; a model that failed once is not retried."""
    failed: set[str] = set()
    with ThreadPoolExecutor(config.jobs) as pool:
        running: dict = {}
        try:
            while pending or running:
                while pending and len(running) < config.jobs:
                    task = pending.popleft()
                    task = None if task['name'] in failed else budget.admit(task)
                    if task is None:
                        bar.update(1)
                        continue
                    deadline = time.monotonic() + config.worker_timeout
                    if budget.deadline is not None:  # cut short then; what the worker measured so far stays
                        deadline = min(deadline, budget.deadline + 20.0)
                    running[pool.submit(workers.run, dict(task, config=asdict(config)), deadline)] = task
                    bar.set_postfix_str(f'round {task["round"] + 1}/{config.rounds} {task["name"]}', refresh=True)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    task, result = running.pop(future), future.result()
                    budget.record(task, result['wall_s'])
                    if result.get('error'):
                        failed.add(task['name'])
                        name, r = task['name'], task['round']
                        logger.warning('%s round %d failed: %s\n%s', name, r, result['error'], result['log_tail'])
                    collect(result)
        finally:
            workers.kill_all()


def _progress(total: int, enabled: bool):

    return progress_bar(total=total, unit='run', desc='bench', enabled=enabled)


def _meta(config: BenchConfig, version: str) -> dict:

    onednn = re.search(r'MKL-DNN (v[\d.]+)', torch.__config__.show())
    meta = machine_meta()
    meta.update(
        device=config.device if config.device != 'cpu' else cpu_name(),  # a GPU's name comes from the workers
        threads=config.threads,
        dtype='fp32' if config.amp == 'none' else f'amp {config.amp}',
        allocator=allocator_label(config),
        img_size=config.img_size,
        batch_size=config.batch_size,
        train_batch_size=config.train_batch_size,
        rounds=config.rounds,
    )
    meta['settings'] = asdict(config)
    meta['software'] = {
        'python': meta.pop('python', None),
        'hybrid_zoo': version,
        'git_commit': _git_commit(),
        'onednn': onednn.group(1) if onednn else None,
        'cpu_capability': torch.backends.cpu.get_cpu_capability(),
        'runtimes': runtime_versions(),
    }
    meta['memory'] = (
        'torch.cuda.max_memory_allocated' if config.device != 'cpu' else 'worker RSS high-water (ru_maxrss)'
    )
    return meta


def _git_commit() -> str | None:
    """HEAD of the checkout this package runs from, with ``-dirty`` when files differ from it."""

    def git(*args: str) -> str:
        out = subprocess.run(['git', *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ''

    try:
        head = git('rev-parse', 'HEAD')
        dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + '-dirty' * dirty) or None


# ---------------------------------------------------------------------------------------------------------------------
# Command line
