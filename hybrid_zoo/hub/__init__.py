"""Hub tier (``pip install 'hybrid_zoo[hub]'``): publish to and load from the Hugging Face Hub.

``client`` pushes a trained model folder in one commit (local paths left out) and loads weights back through the
checked loader of ``hybrid_zoo.factory`` (safetensors only unless asked, sha256, shapes, finite values); ``cards``
renders the model cards; ``server`` is the bundled Hub-protocol server for offline demos and tests.
"""

from .client import (
    CorruptWeightsError,
    HubAuthError,
    HubConflictError,
    HubError,
    ModelLoadError,
    PickleRefusedError,
    UnknownModelError,
    build_from_folder,
    check_folder,
    check_safetensors,
    load,
    push,
)

__all__ = [
    'CorruptWeightsError',
    'HubAuthError',
    'HubConflictError',
    'HubError',
    'ModelLoadError',
    'PickleRefusedError',
    'UnknownModelError',
    'build_from_folder',
    'check_folder',
    'check_safetensors',
    'load',
    'push',
]
