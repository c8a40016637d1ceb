#!/usr/bin/env bash
# Install everything from scratch (if needed), lint (code, then the import contract), and run the
# whole test suite. The dashboard's browser test needs Debian's chromium: installed here (as root
# or with sudo), not by the main install.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh "[test,router]"
bash scripts/install_browser.sh  # chromium + chromedriver for the dashboard's browser test
.venv/bin/ruff check .
.venv/bin/lint-imports --no-cache  # layers and no import cycles (pyproject.toml)
exec .venv/bin/pytest -q "$@"
