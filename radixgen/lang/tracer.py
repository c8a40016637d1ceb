"""Tracing: run a program function on placeholder arguments and record its nodes.

`TracerProgramState` stands in for `s`: `s += expr` records (clones of) the leaf nodes into a
per-stream list linked by `prev_node`; a gen or select becomes an `SglVariable` that later nodes
(possibly in other streams: forks, nested program calls) can reference. Two uses:

- `extract_prefix_by_tracing`: stop at the first node whose text is unknown and return the
  constant text before it (role prefixes rendered with the backend's template) — the prefix
  `run_batch` caches once before a batch.
- `trace_program`: the whole graph, which the compiler runs (`compiler.py`) and
  `print_graph_dfs()` prints.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from radixgen.lang.backend.base import BaseBackend
from radixgen.lang.backend_choice import resolve_backend
from radixgen.lang.global_config import global_config
from radixgen.lang.ir import (
    SglArgument,
    SglConcateAndAppend,
    SglConstantText,
    SglExpr,
    SglExprList,
    SglFork,
    SglGen,
    SglGetForkItem,
    SglRoleBegin,
    SglRoleEnd,
    SglSelect,
    SglSeparateReasoning,
    SglVariable,
    SglVarScopeBegin,
    SglVarScopeEnd,
    as_expr,
)
from radixgen.lang.state import ProgramState, ProgramStateGroup


class StopTracing(Exception):
    """Raised inside a prefix trace at the first node whose text is unknown."""


class TracingScope:
    """The trace that nested program calls (`other_program(...)` inside a traced program)
    record into. One stack per thread."""

    _local = threading.local()

    def __init__(self, tracer_state: TracerProgramState):
        self.tracer_state = tracer_state
        self.last_scope: TracingScope | None = None

    def __enter__(self) -> TracingScope:
        self.last_scope = TracingScope.get_current_scope()
        TracingScope._local.scope = self
        return self

    def __exit__(self, *exc: object) -> None:
        TracingScope._local.scope = self.last_scope

    @staticmethod
    def get_current_scope() -> TracingScope | None:
        return getattr(TracingScope._local, "scope", None)

    def add_child_state(self, state: TracerProgramState) -> None:
        scope: TracingScope | None = self
        while scope is not None:
            scope.tracer_state.child_states.append(state)
            scope = scope.last_scope


def _tracing_backend(backend: Any) -> Any:
    backend = backend if backend is not None else global_config.default_backend
    return BaseBackend() if backend is None else resolve_backend(backend)


def extract_prefix_by_tracing(program: Any, backend: Any) -> str:
    """The constant text every run of `program` starts with ("" if none)."""
    arguments: dict[str, Any] = {name: SglArgument(name, None) for name in program.arg_names}
    arguments.update(program.bind_arguments)
    tracer = TracerProgramState(_tracing_backend(backend), arguments, only_trace_prefix=True)
    try:
        with TracingScope(tracer):
            tracer.ret_value = program.func(tracer, **arguments)
    except Exception:  # StopTracing, or code that needs real values (f-strings, methods)
        pass
    prefix = []
    for node in tracer.nodes:
        if isinstance(node, SglConstantText):
            prefix.append(node.value)
        elif not isinstance(node, (SglVarScopeBegin, SglVarScopeEnd)):
            break
    return "".join(prefix)


def trace_program(program: Any, arguments: dict[str, Any], backend: Any) -> TracerProgramState:
    """Trace the whole program; arguments not given become placeholders."""
    arguments = dict(arguments)
    for name in program.arg_names:
        arguments.setdefault(name, SglArgument(name, None))
    arguments.update(program.bind_arguments)
    tracer = TracerProgramState(_tracing_backend(backend), arguments, only_trace_prefix=False)
    with TracingScope(tracer):
        tracer.ret_value = program.func(tracer, **arguments)
    return tracer


class TracerProgramState(ProgramState):
    """A program state that records nodes instead of running them (one stream)."""

    def __init__(self, backend: Any, arguments: dict[str, Any], only_trace_prefix: bool):
        super().__init__(None)  # no executor
        self.pid = uuid.uuid4().hex
        self.backend = backend
        self.arguments = arguments
        self.only_trace_prefix = only_trace_prefix
        self.nodes: list[SglExpr] = []
        self.last_node: SglExpr | None = None
        self.variables: dict[str, Any] = {}
        self.messages_: list[dict[str, Any]] = []
        self.cur_role: str | None = None
        self.chat_template = backend.get_chat_template()
        self.child_states: list[TracerProgramState] = []
        scope = TracingScope.get_current_scope()
        if scope is not None:
            scope.add_child_state(self)

    # --- recording -----------------------------------------------------------------------------

    def _submit(self, expr: Any) -> None:
        self._trace(as_expr(expr))

    def _append(self, node: SglExpr) -> SglExpr:
        node.pid = self.pid
        node.prev_node = self.last_node
        self.nodes.append(node)
        self.last_node = node
        return node

    def _unknown(self, expr: SglExpr) -> SglExpr:
        if self.only_trace_prefix:
            raise StopTracing
        return self._append(expr.clone())

    def _trace(self, expr: SglExpr) -> None:
        if isinstance(expr, SglExprList):
            for child in expr.expr_list:
                self._trace(child)
        elif isinstance(expr, SglConstantText):
            self._append(expr.clone())
        elif isinstance(expr, SglRoleBegin):
            self._role_begin(expr)
        elif isinstance(expr, SglRoleEnd):
            self._role_end(expr)
        elif isinstance(expr, (SglGen, SglSelect)):
            node = self._unknown(expr)
            node.name = node.name or f"{type(expr).__name__[3:].lower()}_{len(self.variables)}"
            self.variables[node.name] = SglVariable(node.name, node)
        elif isinstance(expr, SglVarScopeBegin):
            self._append(expr.clone())
        elif isinstance(expr, SglVarScopeEnd):
            node = self._append(expr.clone())
            self.variables[node.name] = SglVariable(node.name, node)
        elif isinstance(expr, SglSeparateReasoning):
            node = self._unknown(expr)
            if node.name is not None:
                self.variables[node.name] = SglVariable(node.name, node)
        else:  # arguments, variables, images, ...: text unknown until run time
            self._unknown(expr)

    def _role_begin(self, expr: SglRoleBegin) -> None:
        if self.cur_role is not None:
            raise ValueError(f"nested roles are not allowed ({expr.role} inside {self.cur_role})")
        if not self.only_trace_prefix:  # the executor renders roles with the run's template
            self._append(expr.clone())
            self.cur_role = expr.role
            return
        default_system = self.chat_template.default_system_prompt
        if not self.messages_ and expr.role != "system" and default_system:
            self._role_begin(SglRoleBegin("system"))
            self._append(SglConstantText(default_system))
            self._role_end(SglRoleEnd("system"))
        prefix, _ = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self._append(SglConstantText(prefix))
        self.cur_role = expr.role

    def _role_end(self, expr: SglRoleEnd) -> None:
        if self.only_trace_prefix:
            _, suffix = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
            self._append(SglConstantText(suffix))
        else:
            self._append(expr.clone())
        self.messages_.append({"role": expr.role, "content": ""})
        self.cur_role = None

    # --- ProgramState API --------------------------------------------------------------------

    def fork(self, size: int = 1, position_ids_offset: list[int] | None = None):
        if self.only_trace_prefix:
            raise StopTracing
        fork_node = self._append(SglFork(int(size), position_ids_offset))
        branches = []
        for i in range(int(size)):
            branch = TracerProgramState(self.backend, self.arguments, False)
            item = SglGetForkItem(i)
            item.pid = branch.pid
            item.prev_node = fork_node
            branch.nodes.append(item)
            branch.last_node = item
            branch.variables = dict(self.variables)
            branch.messages_ = list(self.messages_)
            branch.cur_role = self.cur_role
            branch.chat_template = self.chat_template
            branches.append(branch)
        return ProgramStateGroup(branches, self)

    def _join(self, states: list[ProgramState], mode: str) -> None:
        if mode == "gather_variable":
            names = [n for n in states[0].variables if n not in self.variables] if states else []
            for name in names:
                self.variables[name] = [st.variables[name] for st in states]
        elif mode == "concate_and_append":
            self._append(SglConcateAndAppend(list(states)))
        else:
            raise ValueError(f"invalid join mode: {mode!r}")

    def get_var(self, name: str) -> Any:
        if name in self.variables:
            value = self.variables[name]
            if isinstance(value, list):
                return [SglVariable(v.name, v.source) for v in value]
            return SglVariable(value.name, value.source)
        if name in self.arguments:
            return self.arguments[name]
        raise KeyError(name)

    def set_var(self, name: str, value: Any) -> None:
        self.variables[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def get_meta_info(self, name: str, timeout: float | None = None) -> Any:
        return None

    def text(self) -> str:
        if self.only_trace_prefix:
            raise StopTracing
        raise TypeError("a traced program's text is not known")

    def messages(self) -> list[dict[str, Any]]:
        return self.messages_

    def sync(self) -> None:
        pass

    def error(self) -> None:
        return None

    def flatten_nodes(self) -> list[SglExpr]:
        return list(self.nodes)

    def print_graph_dfs(self) -> str:
        """The graph ending at this stream's last node (see `SglExpr.print_graph_dfs`)."""
        return "" if self.last_node is None else self.last_node.print_graph_dfs()

    def __repr__(self) -> str:
        return f"TracerProgramState({len(self.nodes)} nodes)"
