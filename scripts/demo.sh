#!/usr/bin/env bash
# The main job: serve the native and OpenAI APIs on the embedded default model
# (http://127.0.0.1:30000; extra arguments go to `radixgen serve`, e.g. --port, --api-key).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/radixgen serve "$@"
