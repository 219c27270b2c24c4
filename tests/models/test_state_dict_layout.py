"""Every registered model builds the parameters and buffers it built when the listing was recorded (names, order
and shapes), so published weights keep loading; ``state_dict_layout.json`` holds, per model, the number of tensors,
of elements, and the SHA-256 of its listing (one ``name shape`` line per tensor, as :func:`listing` writes it).

Regenerate the file only for a deliberate architecture change (which also bumps ``ARCH_VERSION``).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import timm

import hybrid_zoo

RECORDED = json.loads((Path(__file__).with_name('state_dict_layout.json')).read_text())


def listing(name: str) -> list[tuple[str, tuple[int, ...]]]:
    model = timm.create_model(name, device='meta')  # shapes only: nothing allocated
    return [(key, tuple(t.shape)) for key, t in model.state_dict().items()]


def test_every_registered_model_is_recorded():
    assert sorted(RECORDED) == sorted(hybrid_zoo.list_variants())


@pytest.mark.parametrize('name', sorted(RECORDED))
def test_state_dict_names_and_shapes_are_unchanged(name):
    tensors = listing(name)
    text = '\n'.join(f'{key} {shape}' for key, shape in tensors)
    now = {
        'tensors': len(tensors),
        'elements': sum(math.prod(shape) for _, shape in tensors),
        'sha256': hashlib.sha256(text.encode()).hexdigest(),
    }
    assert now == RECORDED[name]
