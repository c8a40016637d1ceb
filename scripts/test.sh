#!/usr/bin/env bash
# Install everything from scratch (if needed), lint, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "[test,router]"
.venv/bin/ruff check .
exec .venv/bin/pytest -q "$@"
