"""SGLang's native HTTP API: `/generate` and the routes its frontend (`RuntimeEndpoint`) uses."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from radixgen.runtime.sampling_params import SamplingParams
from radixgen.server.context import engine_of, served_model_name, tenant_of
from radixgen.server.errors import (
    APIError,
    output_error,
    params_renamed,
    raise_on_errors,
    stream_error_event,
)
from radixgen.server.protocol import AbortRequest, GenerateRequest
from radixgen.server.streaming import DONE_EVENT, event_stream, sse, until_disconnect
from radixgen.version import __version__

logger = logging.getLogger(__name__)
router = APIRouter()
# The engine names sampling parameters bare; /generate's body nests them.
_SAMPLING_FIELDS = {name: f"sampling_params.{name}" for name in SamplingParams.model_fields}
_HF_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
HEALTH_PROBE_TIMEOUT = 20.0


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(body: GenerateRequest, request: Request):
    engine = engine_of(request)
    tenant = tenant_of(request)
    with params_renamed(_SAMPLING_FIELDS):
        if not body.stream:
            outputs = await until_disconnect(request, engine.async_generate_input(body, tenant))
            raise_on_errors(outputs)
            return outputs
        outputs = await engine.async_generate_input(body, tenant)

    async def events():
        try:
            async for out in outputs:
                error = output_error(out)
                if error is not None:
                    yield stream_error_event(error[1], error[0])
                    break
                yield sse(out)
        except Exception:  # after the 200 headers: report in-band, details in the log
            logger.exception("stream of /generate failed")
            yield stream_error_event("internal server error", 500)
        yield DONE_EVENT

    return event_stream(events())


@router.get("/get_model_info")
@router.get("/model_info")
async def get_model_info(request: Request):
    """The served model, named as clients and routers should call it: no file-system paths."""
    engine = engine_of(request)
    return {
        **_model_identity(request),
        "preferred_sampling_params": None,
        "weight_version": "default",
        "max_context_length": engine.context_len,
        "vocab_size": engine.model_config.vocab_size,
        "eos_token_ids": sorted(engine.eos_ids),
        "bos_token_id": engine.model_config.bos_token_id,
        # radixgen extension: the model's Jinja chat template, so a frontend can pick a
        # matching role template when the model path matches none (SmolLM2 -> ChatML)
        "chat_template": getattr(engine.tokenizer, "chat_template", None),
    }


def _model_identity(request: Request) -> dict[str, Any]:
    """How SGLang's router and frontend identify a worker's model: by the served name (both
    `model_path` and `tokenizer_path` carry it; radixgen shows no file-system path)."""
    engine = engine_of(request)
    name = served_model_name(request)
    multimodal = engine.model_config.vision is not None
    architecture = _HF_ARCHITECTURES.get(engine.model_config.architecture, "")
    return {
        "model_path": name,
        "tokenizer_path": name,
        "served_model_name": name,
        "is_generation": True,
        "has_image_understanding": multimodal,
        "model_type": "llava" if multimodal else engine.model_config.architecture,
        "architectures": ["LlavaForConditionalGeneration" if multimodal else architecture],
    }


@router.get("/get_server_info")
@router.get("/server_info")
async def get_server_info(request: Request):
    engine = engine_of(request)
    stats = await asyncio.to_thread(engine.stats)
    return {
        **dataclasses.asdict(engine.config),
        "model": served_model_name(request),  # the configured path stays private
        **_model_identity(request),
        "tp_size": 1,
        "dp_size": 1,
        **stats,
        "version": __version__,
        "context_length": engine.context_len,
    }


@router.get("/get_load")
async def get_load(request: Request):
    """SGLang's load report, one entry per data-parallel rank (radixgen has one): requests
    running and waiting, and KV tokens in use. Load-aware router policies poll it."""
    engine = engine_of(request)
    stats = await asyncio.to_thread(engine.stats)
    in_use = stats["kv_total"] - stats["kv_free"] - stats["kv_evictable"]
    return [
        {
            "dp_rank": 0,
            "num_reqs": stats["running_requests"] + stats["waiting_requests"],
            "num_waiting_reqs": stats["waiting_requests"],
            "num_tokens": in_use,
        }
    ]


@router.get("/health_generate")
async def health_generate(request: Request):
    """200 once a one-token generation completes within the probe timeout, else 503."""
    engine = engine_of(request)
    probe = engine.async_generate(input_ids=[0], sampling_params={"max_new_tokens": 1})
    try:
        await asyncio.wait_for(probe, HEALTH_PROBE_TIMEOUT)
    except TimeoutError:
        return JSONResponse({"status": "unhealthy"}, status_code=503)
    return {"status": "ok"}


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request):
    engine = engine_of(request)
    if await asyncio.to_thread(engine.flush_cache):
        return JSONResponse("Cache flushed.")
    raise APIError(400, "Cache not flushed: requests are running or waiting.")


@router.post("/abort_request")
async def abort_request(body: AbortRequest, request: Request):
    """Abort the caller's own requests: those labelled `rid` (with their `n > 1` samples), or
    all of them with `abort_all`. The caller is the API key it authenticated with; a server
    without keys has one caller, so there anyone may abort any request whose rid they know."""
    engine = engine_of(request)
    tenant = tenant_of(request)
    if body.abort_all:
        engine.abort_all(tenant)
    elif body.rid:
        engine.abort(body.rid, tenant)
    else:
        raise APIError(400, "give rid or abort_all", "rid")
    return {"status": "ok"}
