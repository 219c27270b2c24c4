"""Publish a trained model folder to the Hugging Face Hub in one commit (same as ``hybrid-zoo push``).

python tools/push.py runs/convformer_tiny-fmnist myorg/convformer_tiny.fmnist [--revision dev] [--private]
The token comes from HF_TOKEN or `hf auth login`; set HF_ENDPOINT to publish to another Hub (e.g. a local one).
"""

import sys

from hybrid_zoo.hub.client import main

if __name__ == '__main__':
    sys.exit(main())
