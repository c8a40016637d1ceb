"""Pydantic validation errors -> `InvalidRequestError` naming the field, for every surface.

A field typed as a union (`str | list[str]`) reports one error per member, each with the
member's type name inside its location (`text.list[str].0`). Callers want the field path only
(`text.0`), and the error of the member the input was meant for: the most specific one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class InvalidRequestError(ValueError):
    """A caller mistake. `param` names the offending field (the OpenAI envelope's `param`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


_TYPE_NAMES = {"str", "int", "float", "bool", "dict", "list", "none", "nullable"}


def field_path(loc: Sequence[Any]) -> str:
    """A pydantic error location as a dotted field path, without union member names."""
    parts = []
    for part in loc:
        text = str(part)
        if isinstance(part, str) and ("[" in text or "(" in text or text in _TYPE_NAMES):
            continue  # a union member's label, not a field
        parts.append(text)
    return ".".join(parts)


def first_error(errors: list[dict[str, Any]]) -> InvalidRequestError:
    """The most specific of a validation's errors (deepest path; first among equals)."""
    if not errors:
        return InvalidRequestError("invalid request")
    best = max(errors, key=lambda e: len(field_path(e.get("loc", ()))))
    wrapped = best.get("ctx", {}).get("error")
    if isinstance(wrapped, InvalidRequestError):  # raised by a model's own validator
        return wrapped
    path = field_path(best.get("loc", ()))
    message = str(best.get("msg", "invalid value")).removeprefix("Value error, ")
    if best.get("type") == "extra_forbidden":
        message = "unknown parameter"
    # The envelope's `param` names the field; the message also says which item of it.
    param = path
    while param and param.rsplit(".", 1)[-1].isdigit() and "." in param:
        param = param.rsplit(".", 1)[0]
    return InvalidRequestError(f"{path}: {message}" if path else message, param or None)
