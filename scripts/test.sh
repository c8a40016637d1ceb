#!/usr/bin/env bash
# Install everything from scratch (if needed), lint (code, then the import contract), and run the
# whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "[test,router]"
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache  # layers and no import cycles (pyproject.toml)
exec .venv/bin/pytest -q "$@"
