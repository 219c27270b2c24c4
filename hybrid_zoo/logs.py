"""What a command prints while it works: one logging setup per process and progress that suits where it goes.

On a terminal progress is a tqdm bar. Written to a file or a pipe (``hybrid-zoo train ... > log 2>&1``), a bar's
carriage-return refreshes and cursor moves would all be kept, so progress comes instead as a plain log line now and
then, with the rate and the time left, as timm's ``train.py`` logs (``[elapsed<remaining, rate]``).

Libraries that log a line per event (Accelerate per saved or loaded file, httpx per Hub request, onnx_ir per
de-duplicated ONNX initializer) stay at WARNING unless ``-v/--verbose``; ``-q/--quiet`` leaves warnings, errors and the
final result. tqdm comes with timm (through huggingface_hub).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm as std_tqdm
from tqdm.auto import tqdm

__all__ = ['LIBRARY_LOGGERS', 'LINE_INTERVAL', 'QUIET', 'VERBOSE', 'progress', 'setup_logging', 'verbosity']

QUIET, NORMAL, VERBOSE = -1, 0, 1
LINE_INTERVAL = 30.0  # seconds between two progress lines in a file (the last line of a bar always comes)
LINE_FORMAT = '{desc}{percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]'
OPEN_LINE_FORMAT = '{desc}{n_fmt} [{elapsed}, {rate_fmt}{postfix}]'  # no total known (a stream)
# loggers of the libraries underneath that speak at INFO once per file, request or graph rewrite
LIBRARY_LOGGERS = (
    'accelerate',  # six '[RANK 0] Saving ...' lines per checkpoint, '[RANK 0] Loading ...' on resume
    'httpx',
    'httpx2',  # huggingface_hub's HTTP client: one line per request
    'huggingface_hub',
    'datasets',
    'filelock',
    'urllib3',
    'onnx_ir',  # 'Replaced initializer ...' once per de-duplicated ONNX initializer
    'onnxscript',
    'torch.onnx',
    'torch._dynamo',
    'torch.export',
)

_log = logging.getLogger('hybrid_zoo.progress')
_state = {'verbosity': NORMAL}


def verbosity() -> int:
    """The level :func:`setup_logging` set: :data:`QUIET` (-1), 0, or :data:`VERBOSE` (1)."""
    return _state['verbosity']


class _TqdmHandler(logging.Handler):
    """Writes to the current ``sys.stderr`` (as ``logging.lastResort`` does: it may be replaced after the setup)
    through ``tqdm.write``, so a log line never breaks a bar on a terminal."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging's contract: a failing handler reports and carries on)
            self.handleError(record)


def setup_logging(
    level: int = NORMAL, *, rank0: bool | None = None, fmt: str = '%(asctime)s %(levelname)s %(name)s: %(message)s'
) -> None:
    """Set up logging and progress for this process (once per command, in its ``main``).

    Args:
        level: :data:`QUIET` (warnings, errors and the result only), 0, or :data:`VERBOSE` (the libraries' INFO
            lines too).
        rank0: Whether this is the process that reports (default: ``$RANK`` is 0 or unset); the others log
            warnings and errors only.
        fmt: The ``logging`` format of a line.
    """
    rank0 = int(os.environ.get('RANK', '0')) == 0 if rank0 is None else rank0
    _state['verbosity'] = level if rank0 else QUIET
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _TqdmHandler)]:  # a second setup replaces the first
        root.removeHandler(old)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter(fmt))
    root.addHandler(handler)  # beside any other (a test runner's): only ours writes to the terminal
    root.setLevel(logging.INFO if _state['verbosity'] > QUIET else logging.WARNING)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if _state['verbosity'] >= VERBOSE else logging.WARNING)
    if _state['verbosity'] == QUIET or not _is_terminal(sys.stderr):
        _quiet_library_bars()


def _is_terminal(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def _quiet_library_bars() -> None:
    """Turn off the bars ``datasets`` and ``huggingface_hub`` draw themselves (they cannot write lines instead); the
    environment carries the choice to the processes this one starts."""
    os.environ['HF_DATASETS_DISABLE_PROGRESS_BARS'] = '1'
    os.environ['HF_HUB_DISABLE_PROGRESS_BARS'] = '1'
    if 'datasets' in sys.modules:
        sys.modules['datasets'].disable_progress_bars()
    if 'huggingface_hub' in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


class _Null:
    """Where a line-mode bar's own drawing goes: nowhere (its lines go through logging)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class _Lines(std_tqdm):  # not tqdm.auto's: in a notebook that is a widget
    """A tqdm whose display is a log line at most every :data:`LINE_INTERVAL` seconds, and its last state at the end.

    tqdm computes the counts, rate and time left; only the drawing is replaced (no carriage returns, no cursor moves).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._line_t = time.monotonic()
        self._line_n = None
        self._closing = False
        super().__init__(*args, **kwargs)
        if self.disable:  # tqdm set nothing else up
            return
        if not self.total:
            self.bar_format = OPEN_LINE_FORMAT
        self.set_description(self.desc.removesuffix(': '), refresh=False)  # 'desc: ', as set_description writes it
        self._line_n = self.n  # the starting point (0, or where a resumed run stands) is no progress to report

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg == '' or self._line_n is None or self.n == self._line_n:  # a clearing, the first draw, or no news
            return True
        now = time.monotonic()
        if not self._closing and now - self._line_t < LINE_INTERVAL:
            return True
        self._line_t, self._line_n = now, self.n
        _log.info('%s', msg or str(self))
        return True

    def close(self) -> None:
        self._closing = True
        super().close()

    def __del__(self) -> None:
        self._line_n = None  # dropped without close (a run that raised): its last state is no result to report
        super().__del__()


def progress(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = 'it',
    enabled: bool = True,
    leave: bool = True,
    **kwargs: Any,
) -> tqdm:
    """A progress bar (a ``tqdm``) for a phase that takes more than a few seconds: a bar on a terminal, a log line
    every :data:`LINE_INTERVAL` seconds (and one at the end when ``leave``) in a file or a pipe, nothing when quiet.

    Args:
        iterable: What to iterate over, as ``tqdm(iterable)``; or None and ``update()`` by hand.
        total: Expected number of units (default: ``len(iterable)``).
        desc: What is in progress, e.g. ``'epoch 3/10'`` (``set_description`` changes it).
        unit: The unit counted, e.g. ``'img'``.
        enabled: False in processes that do not report (e.g. ``not accelerator.is_main_process``).
        leave: Keep the bar (or log the last line) when it closes.
        **kwargs: Any other ``tqdm`` argument (``initial``, ``unit_scale``, ...).
    """
    disable = not enabled or verbosity() == QUIET
    if _is_terminal(sys.stderr):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable, file=sys.stderr,
                    dynamic_ncols=True, **kwargs)  # fmt: skip
    # smoothing=0: the rate since the start, not of the last few updates, which a line every 30 s would misstate
    return _Lines(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable, file=_Null(),
                  bar_format=LINE_FORMAT, mininterval=1.0, smoothing=0, **kwargs)  # fmt: skip
