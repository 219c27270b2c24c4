"""The trainer's files on disk: the output folder it owns, checkpoints (atomic, with a sha256 manifest, resumable
only with the same options) and ``best/`` kept consistent with ``last/``.

A run marks its output folder first and never deletes a file it did not write; ``--resume`` verifies every file of
a checkpoint against its manifest before Accelerate unpickles anything.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from hybrid_zoo.atomic import recover_dir, remove_debris, replace_dir, temp_dir_beside, write_json_atomic
from hybrid_zoo.factory import sha256_file
from hybrid_zoo.run_files import (
    BEST,
    CHECKPOINT_META,
    CHECKPOINTS_DIR,
    CONFIG_NAME,
    LAST,
    LOGS_DIR,
    MANIFEST,
    METRICS,
    MODEL_DIR,
    MODEL_FILES,
    RUN_MARKER,
)
from hybrid_zoo_config.results import TRAIN_RUNS
from hybrid_zoo_config.train import RESUME_MAY_CHANGE, RESUME_MUST_MATCH, TrainConfig

logger = logging.getLogger('hybrid_zoo.train.loop')

CHECKPOINT_FORMAT = 2  # 2: meta.json records the config and the history, manifest.json the sha256 of every file
_RUN_NAME_UNSAFE = re.compile(r'[^A-Za-z0-9_.-]+')
# what accelerate's save_state writes (names only; used for checkpoints that have no manifest)
_ACCELERATE_FILE = re.compile(
    r'(pytorch_model|model|optimizer|scheduler|sampler|dl_state_dict)(_\d+)?\.(bin|safetensors)|random_states_\d+\.pkl|'
    r'custom_checkpoint_\d+\.pkl|scaler\.pt|meta\.json'
)


class ResumeMismatchError(ValueError):
    """A checkpoint made for another model, other data or other training options."""


class CheckpointError(ValueError):
    """A checkpoint folder that is corrupt, changed since it was saved, or holds files the trainer did not write."""


class OutputDirError(ValueError):
    """An output folder holding files this trainer did not write, which a run would replace."""


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + '\n')


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_run_dir(out: Path) -> bool:
    """Whether ``out`` was written by this trainer: its marker, or (runs older than the marker) a checkpoint's meta."""
    if (out / RUN_MARKER).is_file():
        return True
    for name in (LAST, BEST, f'.{LAST}.old', f'.{BEST}.old'):
        meta = _read_json(out / CHECKPOINTS_DIR / name / CHECKPOINT_META)
        if isinstance(meta, dict) and isinstance(meta.get('format'), int) and 'num_updates' in meta:
            return True
    return False


def _checkpoint_files(folder: Path) -> dict[str, Path]:
    """Every file below a checkpoint folder, by its path relative to it (``/``-separated)."""
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob('*')) if p.is_file() or p.is_symlink()}


def _owned_checkpoint_files(folder: Path) -> set[str] | None:
    """The files the trainer wrote into a checkpoint folder (from its manifest), ``None`` when it has none."""
    manifest = _read_json(folder / MANIFEST)
    if isinstance(manifest, dict) and isinstance(manifest.get('files'), dict):
        return set(manifest['files']) | {MANIFEST}
    return None


def _foreign_files(out: Path) -> list[str]:
    """Files in ``model/`` and the checkpoint folders of a run folder that the trainer did not write."""
    foreign = []
    model = out / MODEL_DIR
    if model.is_dir():
        foreign += [f'{MODEL_DIR}/{p.name}' for p in sorted(model.iterdir()) if p.name not in MODEL_FILES]
    for name in (LAST, BEST):
        folder = out / CHECKPOINTS_DIR / name
        if not folder.is_dir():
            continue
        owned = _owned_checkpoint_files(folder)
        for rel in _checkpoint_files(folder):
            ours = rel in owned if owned is not None else bool(_ACCELERATE_FILE.fullmatch(rel))
            if not ours:
                foreign.append(f'{CHECKPOINTS_DIR}/{name}/{rel}')
    return foreign


def check_output_dir(out: Path) -> None:
    """Refuse (``OutputDirError``) an output folder where a run would replace or delete files it did not write.

    A new, empty or marked folder (``RUN_MARKER``, or a checkpoint of ours) is accepted, unless its ``model/`` or
    checkpoint folders hold files the trainer did not write (they are named).
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputDirError(f'--output-dir {out} is a file; expected a folder (new, empty, or one of our runs)')
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if not _is_run_dir(out):
        shown = ', '.join(entries[:8]) + (f', ... ({len(entries)} entries)' if len(entries) > 8 else '')
        raise OutputDirError(
            f'--output-dir {out} is not empty and is not a hybrid_zoo training run (no {RUN_MARKER}, no checkpoint): '
            f'it holds {shown}. A run writes {MODEL_DIR}/, {CHECKPOINTS_DIR}/ and {METRICS} there, replacing what has those '
            'names, so it is refused: choose a new or empty folder'
        )
    foreign = _foreign_files(out)
    if foreign:
        pickles = (
            ' (--resume unpickles what accelerate loads from a checkpoint folder, so it refuses files it cannot vouch '
            'for: resume only from folders you trust)'
            if any(f.startswith(f'{CHECKPOINTS_DIR}/') for f in foreign)
            else ''
        )
        raise OutputDirError(
            f'{out} is a training run, but these files in it were not written by the trainer: {foreign[:10]}'
            f"{' ...' if len(foreign) > 10 else ''}. {MODEL_DIR}/ and the checkpoint folders are the trainer's, replaced "
            f'as a whole by a run{pickles}, so it is refused: move those files elsewhere, or choose another '
            '--output-dir'
        )


def run_folder(cfg: TrainConfig, *, now: datetime.datetime | None = None) -> Path:
    """Where a run writes: ``cfg.output_dir`` as given; otherwise a new folder per run,
    ``runs/train/<YYYYmmdd-HHMMSS>-<model>`` (timm's train.py layout; ``-1``, ``-2``... appended when the name is
    taken), or with ``--resume auto`` the newest run of the same model there that holds a checkpoint."""
    if cfg.output_dir:
        return Path(cfg.output_dir)
    name = _RUN_NAME_UNSAFE.sub('_', cfg.model)[-80:]
    if cfg.resume == 'auto':
        pattern = re.compile(rf'\d{{8}}-\d{{6}}-{re.escape(name)}(?:-(\d+))?')
        runs = [p for p in TRAIN_RUNS.glob(f'*-{name}*') if pattern.fullmatch(p.name) and p.is_dir()]
        for run in sorted(runs, key=lambda p: (p.name[:15], int(pattern.fullmatch(p.name)[1] or 0)), reverse=True):
            if (recover_dir(run / CHECKPOINTS_DIR / LAST) / CHECKPOINT_META).is_file():
                logger.info('--resume auto: continuing the newest run of %s, %s', cfg.model, run)
                return run
    stamp = (now or datetime.datetime.now()).strftime('%Y%m%d-%H%M%S')
    out, count = TRAIN_RUNS / f'{stamp}-{name}', 0
    while out.exists():  # two runs started in the same second
        count += 1
        out = TRAIN_RUNS / f'{stamp}-{name}-{count}'
    return out


def holds_run(out: Path) -> str | None:
    """What of an earlier run ``out`` holds that a fresh start would replace (``None``: nothing)."""
    meta = _read_json(out / CHECKPOINTS_DIR / LAST / CHECKPOINT_META)
    if isinstance(meta, dict):
        return f'a checkpoint at epoch {meta.get("epoch", "?")}'
    if (out / MODEL_DIR / CONFIG_NAME).is_file():
        return 'a trained model folder'
    if (out / CHECKPOINTS_DIR / BEST).is_dir():
        return 'a best checkpoint'
    return None


def missing_folders(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, deepest first: what creating ``out`` makes."""
    made = []
    for folder in (out, *out.parents):
        if folder.exists():  # the root and '.' always do
            break
        made.append(folder)
    return made


def remove_unstarted_run(out: Path, *, made: list[Path], was_empty: bool) -> None:
    """After a run failed before its first step: remove what it wrote and the folders it made.

    Args:
        out: The run folder.
        made: The folders creating ``out`` made (``missing_folders`` before the run started), deepest first; each is
            removed only if nothing else is in it.
        was_empty: ``out`` was new or empty when the run started, so whatever the trainer names in it is the run's
            (its marker, tracker logs, checkpoint folder); otherwise ``out`` held an earlier run, which stays whole.
    """
    if not was_empty:
        return
    for name in (RUN_MARKER, METRICS):
        (out / name).unlink(missing_ok=True)
    for name in (LOGS_DIR, CHECKPOINTS_DIR):  # no step ran, so nothing in them is worth keeping
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)
    for folder in made:
        try:
            folder.rmdir()  # only when empty: a file someone else put there keeps its folder
        except OSError:
            logger.warning('%s holds files the run did not write: kept', folder)
            return


def prepare_output_dir(out: Path) -> None:
    """Mark ``out`` as ours, and clear what interrupted writes left (main process, before anything else is written).

    Interrupted folder replacements are put back (``recover_dir``); ``.model.tmp-*``, ``.best.tmp-*``, ``.last.tmp``,
    ``.<name>.old`` leftovers and ``write_atomic`` temporary files are removed.
    """
    out.mkdir(parents=True, exist_ok=True)
    if not (out / RUN_MARKER).is_file():
        write_json_atomic(out / RUN_MARKER, {'written_by': 'hybrid_zoo.train', 'format': CHECKPOINT_FORMAT})
    ckpt = out / CHECKPOINTS_DIR
    for dst in (out / MODEL_DIR, ckpt / LAST, ckpt / BEST, out / METRICS, out / RUN_MARKER):
        remove_debris(dst)
    if (ckpt / f'.{LAST}.tmp').is_dir():  # save_checkpoint's fixed-name staging folder
        shutil.rmtree(ckpt / f'.{LAST}.tmp')
        logger.info('removed %s (left by an interrupted checkpoint save)', ckpt / f'.{LAST}.tmp')


def publish_dir(tmp: Path, dst: Path, owned: set[str] | frozenset[str] | None) -> None:
    """``replace_dir(tmp, dst)``, carrying over (never deleting) entries of the old ``dst`` not in ``owned``.

    ``owned``: top-level names the trainer writes into ``dst`` (``None``: everything there is ours). The carried
    entries are hard links (or copies) in ``tmp``, so a kill before the swap still leaves the originals in place.
    """
    if dst.is_dir() and owned is not None:
        for entry in sorted(dst.iterdir()):
            if entry.name in owned or (tmp / entry.name).exists():
                continue
            logger.warning('%s was not written by the trainer: kept in the new %s', entry, dst.name)
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy, symlinks=True)
            else:
                _link_or_copy(str(entry), str(tmp / entry.name))
    replace_dir(tmp, dst)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file of a finished checkpoint folder in ``manifest.json``."""
    files = {
        rel: {'size': p.stat().st_size, 'sha256': sha256_file(p)}
        for rel, p in _checkpoint_files(folder).items()
        if rel != MANIFEST
    }
    write_json(folder / MANIFEST, {'format': 1, 'files': files})


def ways_out(path: Path) -> str:
    best = path.parent / BEST
    options = []
    if path.name != BEST and (best / CHECKPOINT_META).is_file():
        options.append(f'resume from the best checkpoint instead (--resume {best}; it rewinds to its epoch)')
    options.append('start afresh in another folder (--output-dir elsewhere, without --resume)')
    return 'Ways out: ' + '; or '.join(options) + '.'


def verify_checkpoint(path: Path) -> dict:
    """Check a checkpoint folder against the manifest written when it was saved; returns its ``meta.json``.

    ``--resume`` unpickles files accelerate wrote (optimizer, RNG, EMA state), so anything the trainer cannot vouch
    for is refused before accelerate opens a file: a file not in the manifest, a missing one, or one whose size or
    sha256 differ (truncated, corrupt or replaced). The manifest guards against accidents, not against someone who
    can rewrite it: resume only from folders you trust.

    Raises:
        CheckpointError: naming the file, and the ways out (``checkpoints/best`` or a fresh start).
    """
    meta = _read_json(path / CHECKPOINT_META)
    manifest = _read_json(path / MANIFEST)
    if not (isinstance(manifest, dict) and isinstance(manifest.get('files'), dict)):
        if isinstance(meta, dict) and meta.get('format', 0) < CHECKPOINT_FORMAT and not (path / MANIFEST).exists():
            raise CheckpointError(
                f'{path} was written by an older hybrid_zoo (checkpoint format {meta.get("format")}, expected '
                f'{CHECKPOINT_FORMAT}): it has no manifest and no record of its options, so it cannot be verified '
                'or resumed. Start afresh in another folder (--output-dir elsewhere, without --resume).'
            )
        state = 'missing' if not (path / MANIFEST).exists() else 'corrupt (not the JSON the trainer writes)'
        raise CheckpointError(
            f'checkpoint {path}: {MANIFEST} is {state}, so the folder cannot be verified. {ways_out(path)}'
        )
    expected = manifest['files']
    on_disk = _checkpoint_files(path)
    unknown = sorted(set(on_disk) - set(expected) - {MANIFEST})
    if unknown:
        raise CheckpointError(
            f'checkpoint {path} holds files the trainer did not write when it saved it: {unknown}. --resume '
            'unpickles what accelerate loads from that folder, so it refuses files it cannot vouch for: move them '
            'out (and resume only from folders you trust)'
        )
    missing = sorted(set(expected) - set(on_disk))
    if missing:
        raise CheckpointError(f'checkpoint {path} lacks {missing}, which it had when saved. {ways_out(path)}')
    for rel, p in on_disk.items():
        if rel == MANIFEST:
            continue
        want = expected[rel]
        size = p.stat().st_size
        if size != want.get('size') or sha256_file(p) != want.get('sha256'):
            how = f'{size} bytes instead of {want.get("size")}' if size != want.get('size') else 'another sha256'
            raise CheckpointError(
                f'checkpoint file {p} is corrupt or was changed since it was saved ({how}). {ways_out(path)}'
            )
    if not isinstance(meta, dict) or meta.get('format') != CHECKPOINT_FORMAT:
        raise CheckpointError(f'checkpoint {path}: meta.json is unreadable or of another format. {ways_out(path)}')
    return meta


def check_rng_state(path: Path, process_index: int) -> None:
    """Refuse a checkpoint whose RNG state this process cannot restore.

    ``accelerate``'s ``load_state`` skips a random-state file it cannot load or apply with an INFO line and resumes
    with the generators as they are, so the resumed run silently differs from an uninterrupted one. The file is
    loaded here the way accelerate loads it (``weights_only``), its CPU states are applied to throw-away generators,
    and everything else ``load_state`` applies from it is checked by format: the step count (``Accelerator.step``,
    which places gradient-accumulation boundaries) and the accelerator's generator states, which this machine may
    not have (:func:`_check_device_rng_state`). A missing accelerator state is not refused: a run saved on a
    machine without one has none, and resuming it on a GPU is allowed.

    Raises:
        CheckpointError: naming the file, what it holds, and the ways out.
    """
    import random

    import numpy as np
    import torch
    from accelerate.utils import RNG_STATE_NAME
    from accelerate.utils import load as accelerate_load

    file = path / f'{RNG_STATE_NAME}_{process_index}.pkl'
    try:
        states = accelerate_load(file)
        random.Random().setstate(states['random_state'])
        np.random.RandomState().set_state(states['numpy_random_seed'])
        torch.Generator().set_state(states['torch_manual_seed'])
        step = states.get('step', 0)  # load_state sets Accelerator.step, which counts gradient accumulation
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise TypeError(f"'step' must be an integer >= 0, got {step!r}")
        for key, value in states.items():  # the accelerator's generators: torch_cuda_manual_seed, ...
            if key.startswith('torch_') and key.endswith('_manual_seed') and key != 'torch_manual_seed':
                _check_device_rng_state(key, value)
    except Exception as e:
        reason = (str(e).strip().splitlines() or [''])[0][:200]
        raise CheckpointError(
            f'checkpoint file {file} does not hold the random-number state of process {process_index} '
            f'({type(e).__name__}: {reason}); expected the Python, numpy, torch and accelerator generator states '
            f'and the step count accelerate saves, without which the resumed run would not repeat the uninterrupted '
            f'one. {ways_out(path)}'
        ) from None


def _check_device_rng_state(key: str, value: object) -> None:
    """Raise unless ``value`` is what ``load_state`` can give the accelerator's generators under ``key``.

    accelerate applies it in the same try as the CPU states, after them, so a bad value is skipped silently, and on a
    machine without that accelerator it is not applied at all: the check goes by the format alone, the one a
    generator's ``set_state`` checks (PyTorch's ``CUDAGeneratorImpl::set_state``: a CPU ``uint8`` tensor of 16
    bytes, seed and Philox offset, or 8 from older versions). ``torch_cuda_manual_seed`` holds one per GPU
    (``set_rng_state_all``); the other accelerators' keys hold one state.
    """
    import torch

    per_device = key == 'torch_cuda_manual_seed'
    if per_device and not (isinstance(value, (list, tuple)) and value):
        raise TypeError(f'{key!r} must be a list of one generator state per GPU, got {type(value).__name__}')
    for state in value if per_device else [value]:
        ok = isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.device.type == 'cpu'
        if not ok or state.layout != torch.strided:
            shown = (
                f'{state.dtype} {state.device.type} tensor' if isinstance(state, torch.Tensor) else type(state).__name__
            )
            raise TypeError(f'{key!r} must hold torch.uint8 CPU tensors (generator states), got {shown}')
        if per_device and state.numel() not in (8, 16):
            raise ValueError(
                f'{key!r}: a GPU generator state has 16 bytes (8 before Philox offsets), got {state.numel()}'
            )


def save_checkpoint(accelerator, root: Path, name: str, meta: dict) -> Path:
    """``save_state`` into a temporary sibling folder on every process, then publish it as ``root/name`` atomically.

    The main process adds ``meta.json`` and the sha256 manifest before the folder is published.
    """
    final = root / name
    tmp = root / f'.{name}.tmp'  # one fixed name, so every process writes into the same folder
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / CHECKPOINT_META, meta)
        write_manifest(tmp)
        publish_dir(tmp, final, _owned_checkpoint_files(final) if final.is_dir() else None)
    accelerator.wait_for_everyone()
    return final


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Publish a copy of ``src`` as ``dst``.

    A real copy, not hard links: ``best`` is the way out when a file of ``last`` is damaged in place (a bad disk, a
    truncating copy), and a hard link would share the damage.
    """
    tmp = temp_dir_beside(dst)
    tmp.rmdir()
    shutil.copytree(src, tmp)
    publish_dir(tmp, dst, _owned_checkpoint_files(dst) if dst.is_dir() else None)


def repair_best(ckpt_root: Path, source: Path, meta: dict) -> None:
    """Make ``checkpoints/best`` hold the epoch ``meta['best_epoch']`` names, copying ``source`` when it is that epoch.

    A kill after ``last`` of an improving epoch was published and before ``best`` was copied leaves ``best`` an epoch
    behind; ``last`` (or the folder resumed from) is then that best epoch, and the copy is redone.
    """
    best = ckpt_root / BEST
    want = meta['best_epoch']
    have = _read_json(best / CHECKPOINT_META)
    have = have.get('epoch') if isinstance(have, dict) else None
    if have == want or not want:
        return
    holds = f'epoch {have}' if have is not None else 'no checkpoint'
    if meta['epoch'] == want and not meta.get('position'):  # a mid-epoch checkpoint is past the best epoch
        logger.warning(
            '%s holds %s, but the best epoch is %d (a run stopped before copying it): copying it from %s',
            best,
            holds,
            want,
            source,
        )
        copy_checkpoint(source, best)
    else:
        logger.warning('%s holds %s, not the best epoch %d, which is no longer on disk', best, holds, want)


def find_resume_checkpoint(cfg: TrainConfig, out: Path) -> Path | None:
    """The checkpoint folder ``cfg.resume`` points to, ``auto`` meaning the one in the run folder ``out``
    (``None``: start fresh)."""
    if not cfg.resume:
        return None
    if cfg.resume == 'auto':
        path = recover_dir(out / CHECKPOINTS_DIR / LAST)
        if not (path / CHECKPOINT_META).is_file():
            logger.info('--resume auto: no checkpoint in %s, starting from scratch', path)
            return None
        return path
    path = recover_dir(Path(cfg.resume))
    if not (path / CHECKPOINT_META).is_file():
        raise ResumeMismatchError(f'--resume {cfg.resume}: not a checkpoint folder (no {CHECKPOINT_META} in {path})')
    return path


def _comparable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))  # tuples and lists alike, as meta.json stores them


def check_resumable(path: Path, meta: dict, expected: dict, config: dict | None = None) -> None:
    """Refuse (``ResumeMismatchError``) a checkpoint made for another model, other data or other options.

    Args:
        path: The checkpoint folder.
        meta: Its ``meta.json``.
        expected: This run's ``model``, ``num_classes``, ``in_chans``, ``ema``, ``dataset`` identity and (optional)
            ``world_size``.
        config: This run's resolved options (``dataclasses.asdict``); those in ``RESUME_MUST_MATCH`` must equal
            the checkpoint's ``meta['config']``.
    """
    problems = []
    for key in ('model', 'num_classes', 'in_chans', 'ema'):
        if meta.get(key) != expected[key]:
            problems.append(f'{key}: checkpoint {meta.get(key)!r}, this run {expected[key]!r}')
    for key, value in expected['dataset'].items():
        if meta.get('dataset', {}).get(key) != value:
            problems.append(f'dataset {key}: checkpoint {meta.get("dataset", {}).get(key)!r}, this run {value!r}')
    if config is not None:
        saved = meta.get('config', {})
        for key in RESUME_MUST_MATCH:
            if key in ('model', 'num_classes', 'in_chans', 'ema'):
                continue  # compared above
            if _comparable(saved.get(key)) != _comparable(config[key]):
                flag = '--' + key.replace('_', '-')
                problems.append(f'{flag}: checkpoint {saved.get(key)!r}, this run {config[key]!r}')
    if 'world_size' in expected and meta.get('world_size') not in (None, expected['world_size']):
        problems.append(
            f'processes: checkpoint {meta["world_size"]}, this run {expected["world_size"]} (the global batch and the '
            'schedule depend on it)'
        )
    if problems:
        raise ResumeMismatchError(
            f'refusing to resume from {path}: it was made for a different run ({"; ".join(problems)}). '
            f'Use the options of that run ({CHECKPOINT_META} in {path} lists them under "config"); only '
            f'{", ".join("--" + k.replace("_", "-") for k in RESUME_MAY_CHANGE if k not in ("resume", "dataset"))} '
            'may change. To train on with other options, start a new run in another --output-dir (with '
            f'--pretrained <this run>/{MODEL_DIR} to start from its weights).'
        )
