"""Run the local Hugging Face Hub-protocol server for offline demos (same as ``hybrid-zoo hub-server``).

python tools/hub_server.py --port 8765 --data-dir /tmp/hub-data --token alice:hf_alice_secret
Clients: export HF_ENDPOINT=http://127.0.0.1:8765 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_alice_secret
"""

import sys

from hybrid_zoo.hub.server import main

if __name__ == '__main__':
    sys.exit(main())
