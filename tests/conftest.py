"""Session fixtures: the real default model, loaded once per test session.

`engine` runs float32 (the exactness reference precision) with a small prefill chunk, so every
prompt longer than 128 tokens also exercises chunked prefill. Engines are shut down at the end of
the session so no scheduler thread outlives the tests.
"""

from __future__ import annotations

import pytest
import torch

from radixgen import Engine

CHUNK = 128


@pytest.fixture(scope="session")
def engine():
    eng = Engine(
        model="smollm2",
        dtype="float32",
        kv_cache_tokens=24576,
        chunked_prefill_size=CHUNK,
        max_running_requests=32,
    )
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def tokenizer(engine):
    return engine.tokenizer


@pytest.fixture(scope="session")
def hf_model():
    """transformers' own LlamaForCausalLM on the same GGUF, dequantized to float32."""
    import transformers
    from transformers import AutoModelForCausalLM

    from radixgen.runtime.model.loader import default_model_path

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = default_model_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()
