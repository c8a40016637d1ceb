"""Shared start-up for the examples: `python examples/<name>.py [--url URL]`.

Without `--url` an in-process engine loads the default model (SmolLM2-135M-Instruct); with it,
the examples talk to a running `radixgen serve` through the native API.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import radixgen as sgl


def run_example(main: Callable[[], object]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", help="a running `radixgen serve` (default: in-process engine)")
    args = parser.parse_args()
    engine = None if args.url else sgl.Engine(model="smollm2")
    sgl.set_default_backend(sgl.RuntimeEndpoint(args.url) if args.url else engine)
    try:
        main()
    finally:
        if engine is not None:
            engine.shutdown()
