"""Errors as the OpenAI API shapes them: `{"error": {"message", "type", "param", "code"}}`.

Caller mistakes are 400 (never FastAPI's default 422, never 500: clients retry 5xx), an unknown
model is 404. Messages are built from validation details, never from `str(exc)` of framework
exceptions (which can leak file paths), and never echo the prompt.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from radixgen.runtime.engine import EngineOverloadedError
from radixgen.runtime.validation import InvalidRequestError, first_error

logger = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    503: "server_overloaded",
    500: "internal_server_error",
}


class APIError(Exception):
    """An error answered with the OpenAI envelope and `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers


class ClientDisconnected(Exception):
    """The client went away before its response; the request was aborted."""


def error_body(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> dict:
    return {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }


def error_response(
    status: int,
    message: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, param, code), status_code=status, headers=headers
    )


def stream_error_event(message: str, status: int = 400, param: str | None = None) -> bytes:
    """An in-band error for a stream whose 200 headers are already sent."""
    return b"data: " + json.dumps(error_body(status, message, param)).encode() + b"\n\n"


@contextlib.contextmanager
def params_renamed(names: dict[str, str]) -> Iterator[None]:
    """Name the field of an engine-raised `InvalidRequestError` as the route's body names it
    (the engine says `max_new_tokens` where a chat body says `max_tokens`)."""
    try:
        yield
    except InvalidRequestError as exc:
        head, _, rest = (exc.param or "").partition(".")
        if head in names:
            exc.param = names[head] + (f".{rest}" if rest else "")
        raise


def output_error(out: dict[str, Any]) -> tuple[int, str] | None:
    """(status, message) of an engine output that ended in an error rather than a result: a
    grammar that failed mid-generation (400) or an engine fault (500, naming only the request's
    own id); None for normal endings, including aborts the caller asked for."""
    reason = out["meta_info"]["finish_reason"]
    if reason is None or reason["type"] != "abort" or reason.get("status_code") is None:
        return None
    return reason["status_code"], reason.get("message") or "request failed"


def raise_on_errors(outputs: dict[str, Any] | list[dict[str, Any]]) -> None:
    """Answer a finished (non-streamed) request that failed with its status, not a 200."""
    for out in outputs if isinstance(outputs, list) else [outputs]:
        error = output_error(out)
        if error is not None:
            raise APIError(error[0], error[1])


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "request body is not valid JSON", None
    located = [{**e, "loc": tuple(p for p in e.get("loc", ()) if p != "body")} for e in errors]
    error = first_error(located)
    return error.message, error.param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(400, message, param)

    @app.exception_handler(InvalidRequestError)
    async def _invalid(_: Request, exc: InvalidRequestError):
        return error_response(400, exc.message, exc.param, exc.code)

    @app.exception_handler(ClientDisconnected)
    async def _gone(_: Request, exc: ClientDisconnected):
        return JSONResponse({}, status_code=499)  # nobody is listening

    @app.exception_handler(EngineOverloadedError)
    async def _overloaded(_: Request, exc: EngineOverloadedError):
        return error_response(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError):
        return error_response(exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception):
        logger.exception("unhandled error")
        return error_response(500, "internal server error")
