"""`radixgen serve --speculative-algorithm ngram`: the flag reaches the engine, native responses
carry the per-request figures, /metrics the totals, and OpenAI responses are unchanged in shape.

Its own server (the session server runs without speculation), float32, small pool.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from radixgen.launcher import running_server

ARGS = [
    "--dtype",
    "float32",
    "--kv-cache-tokens",
    "4096",
    "--log-level",
    "warning",
    "--speculative-algorithm",
    "ngram",
]
PROMPT = "Counting: 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3,"


@pytest.fixture(scope="module")
def spec_url():
    with running_server(ARGS) as server:
        yield server.url


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_native_meta_info_and_metrics_report_speculation(spec_url):
    body = {"text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 24}}
    out = httpx.post(f"{spec_url}/generate", json=body, timeout=120).json()
    meta = out["meta_info"]
    assert meta["spec_verify_ct"] > 0
    assert 0 < meta["spec_accepted_tokens"] <= meta["spec_draft_tokens"]
    assert meta["spec_verify_ct"] < meta["completion_tokens"]  # several tokens per step
    metrics = httpx.get(f"{spec_url}/metrics", timeout=30).text
    assert metric(metrics, "radixgen_spec_draft_tokens_total") >= meta["spec_draft_tokens"]
    assert metric(metrics, "radixgen_spec_accepted_tokens_total") >= meta["spec_accepted_tokens"]


def test_openai_stream_is_unchanged_in_shape(spec_url):
    model = httpx.get(f"{spec_url}/v1/models", timeout=30).json()["data"][0]["id"]
    body = {
        "model": model,
        "prompt": PROMPT,
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    with httpx.stream("POST", f"{spec_url}/v1/completions", json=body, timeout=120) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    plain = httpx.post(
        f"{spec_url}/v1/completions", json={**body, "stream": False}, timeout=120
    ).json()
    assert text == plain["choices"][0]["text"]
    assert "4, 5, 6" in text
