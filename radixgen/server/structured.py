"""OpenAI structured-output fields -> the engine's constraint sampling params.

- `response_format` (chat): `text`; `json_object` (any JSON object: the schema `{"type":
  "object"}`, as SGLang compiles it); `json_schema` (`{"json_schema": {"name", "schema",
  "strict"}}`; a missing schema is a 400, as in vLLM); `structural_tag` (SGLang's `{"type":
  "structural_tag", "structures": [...], "triggers": [...]}`, passed on whole).
- Extensions on both routes (SGLang / vLLM names): `regex`, `ebnf` (GBNF or Lark), `json_schema`
  (a schema, as a string or an object), `choice` (the output is exactly one of the strings).

At most one constraint per request. Whether the regex, schema or grammar is *valid* is decided
by the engine's grammar compiler, which raises `InvalidRequestError` -> 400 naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from radixgen.server.errors import APIError


def constraint_params(body: Any) -> dict[str, str]:
    """The one constraint of an OpenAI request as sampling params (`{}` when unconstrained)."""
    found: dict[str, dict[str, str]] = {}
    response_format = getattr(body, "response_format", None)
    if response_format is not None:
        param = _response_format(response_format)
        if param:
            found["response_format"] = param
    if body.regex is not None:
        found["regex"] = {"regex": body.regex}
    if body.ebnf is not None:
        found["ebnf"] = {"ebnf": body.ebnf}
    if body.json_schema is not None:
        schema = body.json_schema
        found["json_schema"] = {
            "json_schema": schema if isinstance(schema, str) else json.dumps(schema)
        }
    if body.choice is not None:
        found["choice"] = {"ebnf": choice_grammar(body.choice)}
    if len(found) > 1:
        names = sorted(found)
        raise APIError(400, f"at most one structured-output constraint, got {names}", names[1])
    return next(iter(found.values()), {})


def choice_grammar(choices: list[str]) -> str:
    """A Lark grammar whose only sentences are the given strings."""
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise APIError(400, "choice must be a non-empty list of non-empty strings", "choice")
    return "start: " + " | ".join(json.dumps(c) for c in choices)


def _response_format(response_format: dict[str, Any]) -> dict[str, str]:
    kind = response_format.get("type")
    if kind in (None, "text"):
        return {}
    if kind == "json_object":
        return {"json_schema": json.dumps({"type": "object"})}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            raise APIError(
                400, "response_format json_schema.schema must be provided", "response_format"
            )
        return {"json_schema": json.dumps(schema)}
    if kind == "structural_tag":
        return {"structural_tag": json.dumps(response_format)}
    raise APIError(
        400,
        "response_format type must be text, json_object, json_schema or structural_tag, "
        f"got {kind!r}",
        "response_format",
    )
