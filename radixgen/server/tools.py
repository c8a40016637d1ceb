"""Tool calling on /v1/chat/completions: `tools`, `tool_choice`, `parallel_tool_calls`.

The model writes a call as JSON, `{"name": ..., "arguments": {...}}`:
- `required`: the output is constrained to a JSON array of such calls (one per tool schema,
  `name` fixed to the tool's, `arguments` to its `parameters`); one item unless parallel calls are
  allowed.
- a named tool: one call object for that tool, constrained the same way.
- `auto` (the default when tools are given): the model writes freely; an output that parses as
  such a call (or an array of them, optionally inside `<tool_call>` tags) becomes `tool_calls`.
- `none`: tools are not offered.

Templates that render `tools` themselves get them; for the others (SmolLM2's ChatML template
among them) the tool list and the call format are described in a system message. Earlier
assistant calls and tool results are rendered as text in the same format.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from radixgen.server.errors import APIError

TOOL_CALL_TAGS = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ToolPlan:
    tools: dict[str, dict[str, Any]]  # name -> function spec (name, description, parameters)
    mode: str  # "auto" | "required" | "named"
    constraint: dict[str, str]  # sampling params constraining the output ({} for auto)

    def system_prompt(self) -> str:
        specs = json.dumps(list(self.tools.values()))
        return (
            "You can call these tools (JSON specs): "
            f"{specs}\nTo call a tool, reply with only a JSON object "
            '{"name": <tool name>, "arguments": <arguments object>}.'
        )

    def parse(self, text: str) -> list[dict[str, Any]] | None:
        """The tool calls an output makes, in the OpenAI shape, or None (plain content)."""
        tagged = TOOL_CALL_TAGS.findall(text)
        candidates = tagged or [text.strip()]
        calls: list[dict[str, Any]] = []
        for candidate in candidates:
            try:
                value = json.loads(candidate)
            except json.JSONDecodeError:
                return None
            items = value if isinstance(value, list) else [value]
            for item in items:
                call = self._call(item)
                if call is None:
                    return None
                calls.append(call)
        return calls or None

    def _call(self, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict) or item.get("name") not in self.tools:
            return None
        arguments = item.get("arguments", item.get("parameters", {}))
        if not isinstance(arguments, dict):
            return None
        return {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": item["name"], "arguments": json.dumps(arguments)},
        }


def plan_tools(tools: list[dict[str, Any]] | None, tool_choice: Any, parallel: bool):
    """Validate `tools` / `tool_choice`; None when no tool can be called."""
    if tool_choice is not None and not tools and tool_choice != "none":
        raise APIError(400, "tool_choice is only allowed when tools are given", "tool_choice")
    if not tools or tool_choice == "none":
        return None
    functions: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise APIError(400, "each tool must be {type: function, function: {...}}", "tools")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise APIError(400, "each tool function needs a name", "tools")
        parameters = function.get("parameters") or {"type": "object"}
        if not isinstance(parameters, dict):
            raise APIError(400, f"parameters of tool {name!r} must be a JSON schema", "tools")
        functions[name] = {**function, "parameters": parameters}
    if tool_choice in (None, "auto"):
        return ToolPlan(functions, "auto", {})
    if tool_choice == "required":
        items = {"anyOf": [_call_schema(f) for f in functions.values()]}
        schema: dict[str, Any] = {"type": "array", "items": items, "minItems": 1}
        if not parallel:
            schema["maxItems"] = 1
        return ToolPlan(functions, "required", {"json_schema": json.dumps(schema)})
    name = _named_choice(tool_choice)
    if name not in functions:
        raise APIError(400, f"tool_choice names {name!r}, which is not in tools", "tool_choice")
    schema = _call_schema(functions[name])
    return ToolPlan(functions, "named", {"json_schema": json.dumps(schema)})


def _named_choice(tool_choice: Any) -> str:
    if isinstance(tool_choice, dict):
        function = tool_choice.get("function")
        if tool_choice.get("type") == "function" and isinstance(function, dict):
            name = function.get("name")
            if isinstance(name, str):
                return name
    raise APIError(
        400,
        "tool_choice must be none, auto, required or {type: function, function: {name}}",
        "tool_choice",
    )


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": function["parameters"]},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def render_tool_history(message: dict[str, Any]) -> dict[str, Any]:
    """An assistant turn's earlier `tool_calls` as the text the model writes for them."""
    calls = message.pop("tool_calls", None)
    if calls:
        try:
            written = [
                {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"])}
                for c in calls
            ]
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise APIError(
                400, "tool_calls need function.name and JSON function.arguments", "messages"
            ) from exc
        text = json.dumps(written[0] if len(written) == 1 else written)
        message["content"] = (message.get("content") or "") + text
    return message
