"""The language's intermediate representation: sampling parameters and expression nodes.

A program builds expressions (`"Q: " + gen("answer")` is an `SglExprList`) and submits them to a
state with `s += expr`. Nodes only describe; the interpreter executes them (a dispatch table keyed
by node type) and the tracer links them into a graph through `prev_node`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

REGEX_INT = r"[-+]?[0-9]+[ \n]*"
REGEX_FLOAT = r"[-+]?[0-9]*\.?[0-9]+[ \n]*"
REGEX_BOOL = r"(True|False)"
REGEX_STR = r"\"[\w\d\s]*\""  # not ".*": interegular-based grammar compilers reject it


@dataclass
class SglSamplingParams:
    """Sampling parameters with SGLang's frontend defaults (`run()` defaults to temperature 1.0).

    A `gen` holds a *partial* instance (`partial()`: unset fields are None) whose set fields
    override the program's defaults (`resolve`)."""

    max_new_tokens: int = 128
    min_new_tokens: int = 0
    n: int = 1
    stop: str | list[str] | tuple[str, ...] = ()
    stop_token_ids: list[int] | tuple[int, ...] = ()
    stop_regex: str | list[str] | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    ignore_eos: bool = False
    return_logprob: bool | None = None
    logprob_start_len: int | None = None
    top_logprobs_num: int | None = None
    return_text_in_logprobs: bool | None = None
    dtype: Any = None
    regex: str | None = None
    json_schema: str | None = None

    @classmethod
    def partial(cls, **values: Any) -> SglSamplingParams:
        """An instance where every field not given (or given as None) is None."""
        return cls(**{f.name: values.get(f.name) for f in dataclasses.fields(cls)})

    def resolve(self, overrides: SglSamplingParams) -> SglSamplingParams:
        """A copy of these defaults with every non-None field of `overrides` applied."""
        merged = copy.deepcopy(self)
        for f in dataclasses.fields(overrides):
            value = getattr(overrides, f.name)
            if value is not None:
                setattr(merged, f.name, copy.deepcopy(value))
        return merged

    def stop_list(self) -> list[str]:
        if not self.stop:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def to_srt_kwargs(self) -> dict[str, Any]:
        """The `sampling_params` of a native `/generate` request."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "n": self.n,
            "stop": self.stop,
            "stop_token_ids": self.stop_token_ids,
            "stop_regex": self.stop_regex,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "min_p": self.min_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
            "ignore_eos": self.ignore_eos,
            "regex": self.regex,
            "json_schema": self.json_schema,
        }

    def to_openai_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of an OpenAI completions/chat call (no top_k, no constraints)."""
        return {
            "max_tokens": self.max_new_tokens,
            "stop": self.stop or None,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "frequency_penalty": self.frequency_penalty,
            "presence_penalty": self.presence_penalty,
        }


_node_ids = itertools.count()


class SglExpr:
    """Base of every node. `+` concatenates into an `SglExprList`; strings become constants."""

    def __init__(self) -> None:
        self.node_id = next(_node_ids)
        self.prev_node: SglExpr | None = None  # set by the tracer
        self.pid: Any = None  # the traced stream this node belongs to

    def clone(self) -> SglExpr:
        """A shallow copy with its own node id and no graph links (the tracer records
        clones, so a node reused across programs or traces is never linked twice)."""
        twin = copy.copy(self)
        twin.node_id = next(_node_ids)
        twin.prev_node = None
        twin.pid = None
        return twin

    def __add__(self, other: Any) -> SglExprList:
        return SglExprList([self, as_expr(other)])

    def __radd__(self, other: Any) -> SglExprList:
        return SglExprList([as_expr(other), self])

    def print_graph_dfs(self) -> str:
        """The traced graph ending at this node, dependencies first, one `%id = ...` per line."""
        lines: list[str] = []
        seen: set[int] = set()

        def visit(node: SglExpr | None) -> None:
            if node is None or node.node_id in seen:
                return
            seen.add(node.node_id)
            visit(node.prev_node)
            if isinstance(node, SglExprList):
                for child in node.expr_list:
                    visit(child)
            elif isinstance(node, SglVariable):
                visit(node.source)
            head = f"%{node.node_id} = "
            if node.prev_node is not None and not isinstance(node, (SglFork, SglGetForkItem)):
                head += f"%{node.prev_node.node_id} + "
            lines.append(head + repr(node))

        visit(self)
        return "\n".join(lines) + "\n"


def as_expr(value: Any) -> SglExpr:
    """Strings (and any non-node value) become `SglConstantText`."""
    return value if isinstance(value, SglExpr) else SglConstantText(str(value))


class SglExprList(SglExpr):
    def __init__(self, expr_list: list[SglExpr]):
        super().__init__()
        flat: list[SglExpr] = []
        for expr in expr_list:  # keep lists flat: ("a" + gen()) + "b" is one list of three
            flat.extend(expr.expr_list if isinstance(expr, SglExprList) else [expr])
        self.expr_list = flat

    def __repr__(self) -> str:
        return f"ExprList({self.expr_list})"


class SglArgument(SglExpr):
    """A program argument while tracing (its value is unknown)."""

    def __init__(self, name: str, value: Any):
        super().__init__()
        self.name = name
        self.value = value

    def __repr__(self) -> str:
        return f"Argument(name={self.name}, value={self.value!r})"

    def __len__(self) -> int:
        return len(self.value)

    def __getitem__(self, i: Any) -> Any:
        return self.value[i]

    def __format__(self, *args: Any) -> str:
        raise TypeError("f-strings on program arguments break tracing; use `+` to concatenate")


class SglConstantText(SglExpr):
    def __init__(self, value: str):
        super().__init__()
        self.value = value

    def __repr__(self) -> str:
        return f"Constant({self.value!r})"


class SglGen(SglExpr):
    """Generate text into variable `name`; `sampling_params` is partial (unset fields None)."""

    def __init__(self, name: str | None = None, **sampling: Any):
        super().__init__()
        self.name = name
        self.sampling_params = SglSamplingParams.partial(**sampling)

    def __repr__(self) -> str:
        return f"Gen({self.name!r})"


class SglSelect(SglExpr):
    def __init__(self, name: str | None, choices: list[str], temperature: float, choices_method):
        super().__init__()
        self.name = name
        self.choices = list(choices)
        self.temperature = temperature
        self.choices_method = choices_method

    def __repr__(self) -> str:
        return f"Select({self.name!r}, choices={self.choices})"


class SglRoleBegin(SglExpr):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleBegin({self.role})"


class SglRoleEnd(SglExpr):
    def __init__(self, role: str):
        super().__init__()
        self.role = role

    def __repr__(self) -> str:
        return f"RoleEnd({self.role})"


class SglImage(SglExpr):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def __repr__(self) -> str:
        return f"Image({self.path!r})"


class SglVideo(SglExpr):
    def __init__(self, path: str, num_frames: int):
        super().__init__()
        self.path = path
        self.num_frames = num_frames

    def __repr__(self) -> str:
        return f"Video({self.path!r}, num_frames={self.num_frames})"


class SglVarScopeBegin(SglExpr):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeBegin({self.name!r})"


class SglVarScopeEnd(SglExpr):
    def __init__(self, name: str):
        super().__init__()
        self.name = name

    def __repr__(self) -> str:
        return f"VarScopeEnd({self.name!r})"


class SglCommitLazy(SglExpr):
    """Make the backend compute (cache) the current text now: sent before a fork."""

    def __repr__(self) -> str:
        return "CommitLazy()"


class SglConcateAndAppend(SglExpr):
    """Append the text the given forked states added (`join("concate_and_append")`)."""

    def __init__(self, states: list[Any]):
        super().__init__()
        self.states = states

    def __repr__(self) -> str:
        return f"ConcatenateAndAppend({len(self.states)} states)"


class SglFork(SglExpr):
    """A traced `s.fork(number)`; the branches start with `SglGetForkItem` nodes."""

    def __init__(self, number: int, position_ids_offset: list[int] | None = None):
        super().__init__()
        self.number = number
        self.position_ids_offset = position_ids_offset

    def __repr__(self) -> str:
        parent = None if self.prev_node is None else self.prev_node.node_id
        return f"Fork(%{parent}, number={self.number})"


class SglGetForkItem(SglExpr):
    def __init__(self, index: int):
        super().__init__()
        self.index = index

    def __repr__(self) -> str:
        fork = None if self.prev_node is None else self.prev_node.node_id
        return f"GetForkItem(%{fork}, index={self.index})"


class SglVariable(SglExpr):
    """The value of variable `name`, produced by node `source` (possibly in another stream)."""

    def __init__(self, name: str, source: SglExpr | None):
        super().__init__()
        self.name = name
        self.source = source
        self.source_stream_executor: Any = None  # bound when a compiled program runs

    def __repr__(self) -> str:
        source = None if self.source is None else self.source.node_id
        return f"Variable({self.name!r}, source=%{source})"


class SglSeparateReasoning(SglExpr):
    """After `expr` (a gen or select) ran, move its reasoning into `<name>_reasoning_content`."""

    def __init__(self, model_type: str | None, expr: SglExpr | None):
        super().__init__()
        self.model_type = model_type
        self.expr = expr
        self.name = None
        if isinstance(expr, (SglGen, SglSelect)) and expr.name is not None:
            self.name = self.process_name_for_reasoning(expr.name)

    @staticmethod
    def process_name_for_reasoning(name: str) -> str:
        return f"{name}_reasoning_content"

    def __repr__(self) -> str:
        return f"SeparateReasoning({self.model_type!r}, {self.expr!r})"
