"""Hub tier (``pip install 'hybrid_zoo[hub]'``): publish to and load from the Hugging Face Hub.

``client`` pushes a trained model folder in one commit and loads weights back with every check (safetensors
only unless asked, sha256, shapes); ``cards`` renders the model cards; ``server`` is the bundled Hub-protocol
server for offline demos and tests.
"""

from .client import (
    CorruptWeightsError,
    HubAuthError,
    HubError,
    PickleRefusedError,
    build_from_folder,
    check_folder,
    check_safetensors,
    load,
    push,
)

__all__ = [
    'CorruptWeightsError',
    'HubAuthError',
    'HubError',
    'PickleRefusedError',
    'build_from_folder',
    'check_folder',
    'check_safetensors',
    'load',
    'push',
]
