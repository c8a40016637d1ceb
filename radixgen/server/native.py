"""SGLang's native HTTP API: `/generate` and the routes its frontend (`RuntimeEndpoint`) uses."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

import radixgen
from radixgen.server.app import (
    DONE_EVENT,
    engine_of,
    event_stream,
    served_model_name,
    sse,
    until_disconnect,
)
from radixgen.server.errors import APIError, stream_error_event
from radixgen.server.protocol import AbortRequest, GenerateRequest

router = APIRouter()
HEALTH_PROBE_TIMEOUT = 20.0


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(body: GenerateRequest, request: Request):
    engine = engine_of(request)
    if (body.text is None) == (body.input_ids is None):
        raise APIError(400, "exactly one of text and input_ids is required", "text")
    kwargs = dict(
        prompt=body.text,
        input_ids=body.input_ids,
        sampling_params=body.sampling_params,
        rid=body.rid,
        return_logprob=bool(body.return_logprob),
        logprob_start_len=body.logprob_start_len,
        top_logprobs_num=body.top_logprobs_num,
        return_text_in_logprobs=bool(body.return_text_in_logprobs),
    )
    if not body.stream:
        return await until_disconnect(request, engine.async_generate(**kwargs))
    outputs = await engine.async_generate(**kwargs, stream=True)

    async def events():
        try:
            async for out in outputs:
                yield sse(out)
        except Exception as exc:  # after the 200 headers: report in-band
            yield stream_error_event(str(exc), 500)
        yield DONE_EVENT

    return event_stream(events())


@router.get("/get_model_info")
async def get_model_info(request: Request):
    engine = engine_of(request)
    return {
        "model_path": str(engine.source.path),
        "tokenizer_path": str(engine.source.path),
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "served_model_name": served_model_name(request),
        # radixgen extension: the model's Jinja chat template, so a frontend can pick a
        # matching role template when the model path matches none (SmolLM2 -> ChatML)
        "chat_template": getattr(engine.tokenizer, "chat_template", None),
    }


@router.get("/get_server_info")
async def get_server_info(request: Request):
    engine = engine_of(request)
    stats = await asyncio.to_thread(engine.stats)
    return {
        **dataclasses.asdict(engine.config),
        **stats,
        "version": radixgen.__version__,
        "context_length": engine.context_len,
    }


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
    engine = engine_of(request)
    if body.abort_all:
        engine.abort_all()
    elif body.rid:
        engine.abort(body.rid)
    else:
        raise APIError(400, "give rid or abort_all", "rid")
    return {"status": "ok"}
