"""What makes data usable, checked the same way for map-style and streamed reading: labels inside the classes and
images that decode, each failure one ``DataError`` line naming where (a row of a split, or a row of a shard)."""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be used as asked; the message says what was expected and what was found.

    Raised in a DataLoader worker, it reaches the main process re-created by torch with the worker's whole traceback
    as its message; the message is cut back to the original one line (the traceback stays in ``worker_traceback``).
    """

    def __init__(self, message: str = '', *args: Any) -> None:
        self.worker_traceback = None
        name = type(self).__name__
        if isinstance(message, str) and message.startswith(f'Caught {name} in DataLoader worker'):
            # the traceback ends with the line '<module>.DataError: <original message>'
            matches = list(re.finditer(rf'^(?:[\w.]+\.)?{name}: ', message, flags=re.MULTILINE))
            last = matches[-1] if matches else None
            if last is not None:
                self.worker_traceback, message = message, message[last.end() :].rstrip()
        super().__init__(message, *args)


def first_line(e: BaseException) -> str:
    """``Type: first line of the message``: an exception as one line of an error message."""
    text = str(e).strip()
    return f'{type(e).__name__}: {text.splitlines()[0] if text else ""}'


def label_array(values: Sequence[Any] | np.ndarray, where: Callable[[int], str]) -> np.ndarray:
    """Labels as int64, refusing a missing one (``None``, NaN) or one that is not a whole number.

    Args:
        values: The labels as read: integers, or floats / objects when some are missing.
        where: Names the place of label ``i`` in an error, e.g. ``row 12 of split 'train'``.

    Raises:
        DataError: naming the first offending label's place and the number of such labels.
    """
    column = np.asarray(values)
    if column.dtype.kind in 'iub':
        return column.astype(np.int64)
    as_list = column.tolist() if column.ndim else [column.item()]
    bad = [i for i, v in enumerate(as_list) if not _whole_number(v)]
    if bad:
        value = as_list[bad[0]]
        what = 'has label None' if value is None or (isinstance(value, float) and np.isnan(value)) else None
        what = what or f'has label {value!r}, not a class index'
        raise DataError(f'{where(bad[0])} {what} ({len(bad)} such labels); every example needs an integer class label')
    return np.asarray([int(v) for v in as_list], dtype=np.int64)


def _whole_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and bool(np.isfinite(value)) and float(value).is_integer()


def check_label_range(labels: np.ndarray, num_classes: int, where: Callable[[int], str]) -> None:
    """Refuse labels outside ``[0, num_classes)`` (``-1``, a class the classifier does not have).

    Raises:
        DataError: naming the first offending label's place, its value and how many there are.
    """
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        values = sorted({int(v) for v in labels[bad][:1000]})
        raise DataError(
            f'labels outside [0, {num_classes}): {where(int(bad[0]))} has label {int(labels[bad[0]])} ({bad.size} such '
            f'labels; values {values[:10]}). Pass --num-classes to cover them, or fix the labels (-1 usually marks '
            'an unlabelled test split: evaluate on another split).'
        )


def image_error(where: str, e: BaseException) -> DataError:
    """The one error for an image that cannot be read or transformed: where it is, and what went wrong."""
    return DataError(f'cannot read or transform the image in {where}: {first_line(e)}')


def open_encoded_image(value: dict) -> Any:
    """A PIL image from an encoded image (``{'bytes', 'path'}``), decoded now so a bad file fails here."""
    from PIL import Image

    image = Image.open(io.BytesIO(value['bytes'])) if value.get('bytes') else Image.open(value['path'])
    image.load()
    return image
