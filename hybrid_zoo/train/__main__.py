"""``python -m hybrid_zoo.train [flags]``: what ``accelerate launch -m hybrid_zoo.train`` runs in each process; the
flags are ``hybrid-zoo train``'s (``--help`` lists them)."""

import sys

from hybrid_zoo_config.train import config_from_args

from .loop import launch

sys.exit(launch(config_from_args()))
