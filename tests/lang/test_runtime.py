"""`sgl.Runtime` launches `radixgen serve`, serves programs, and stops (reaped) on shutdown."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

import radixgen as sgl
from radixgen.launcher import free_port


@sgl.function
def greet(s, name):
    s += sgl.user("Greet " + name + ".")
    s += sgl.assistant(sgl.gen("greeting", max_tokens=4))


def test_runtime_lifecycle():
    with pytest.warns(UserWarning, match="tp_size"):
        runtime = sgl.Runtime(
            model_path="smollm2",
            dtype="bfloat16",
            kv_cache_tokens=2048,
            tp_size=1,
            port=free_port(),
        )
    pid = runtime.pid
    try:
        assert runtime.endpoint.chat_template.name == "chatml"
        state = greet.run(name="Ada", backend=runtime, temperature=0)
        assert state.error() is None and isinstance(state["greeting"], str)
        out = json.loads(runtime.generate("Hello", {"max_new_tokens": 2, "temperature": 0}))
        assert out["meta_info"]["completion_tokens"] == 2

        async def stream():
            return [p async for p in runtime.async_generate("Hi", {"max_new_tokens": 3})]

        assert len("".join(asyncio.run(stream()))) > 0
    finally:
        runtime.shutdown()
    assert runtime.process is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # terminated and reaped
    runtime.shutdown()  # idempotent
