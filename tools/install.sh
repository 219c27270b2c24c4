#!/usr/bin/env bash
# Set up a fresh machine: Fashion-MNIST from Debian (the embedded default data), the pinned
# torch/torchvision pair (the only pair that works together on these machines, see README), and this
# package with every extra. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] && ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
    || echo "install.sh: dataset-fashion-mnist not installed; the demo falls back to scikit-learn digits" >&2
fi
python -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
python -m pip install -q --disable-pip-version-check -e '.[dev]'
