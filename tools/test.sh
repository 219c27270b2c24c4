#!/usr/bin/env bash
# The test command: lint, formatting, generated docs up to date, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff format --check .
ruff check .
python -m hybrid_zoo_cli render-docs --check
python -m pytest "$@"
