#!/usr/bin/env bash
# The main job on the embedded default model: a streamed chat generation through the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/radixgen generate "${@:-What is the capital of France?}"
