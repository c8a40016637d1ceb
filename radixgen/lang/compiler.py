"""Compiler mode: run a traced program as a graph of streams, independent streams in parallel.

`program.compile()` traces the program once. Each traced stream (the program itself, every fork
branch, every nested program call) becomes one `StreamExecutor` per run, and all nodes of all
streams are submitted at once: a stream blocks only where it reads a variable another stream
produces (`SglVariable`) or where a fork branch waits for its fork point. So two nested calls
that depend only on the program's arguments generate concurrently, without the caller's Python
code waiting in between. Unlike the interpreter, control flow is frozen at trace time.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from radixgen.lang.backend_choice import resolve_backend
from radixgen.lang.interpreter import ProgramError, StreamExecutor
from radixgen.lang.ir import (
    SglArgument,
    SglConcateAndAppend,
    SglExpr,
    SglFork,
    SglGetForkItem,
    SglSamplingParams,
    SglVariable,
    as_expr,
)
from radixgen.lang.program_runner import cache_program
from radixgen.lang.state import ProgramState
from radixgen.lang.tracer import TracerProgramState


def compile_func(function: Any, backend: Any) -> CompiledFunction:
    return CompiledFunction(function.trace(backend=backend), function)


class _ForkPoint(SglExpr):
    """Runs in the parent stream: commits the text (for >1 branches) and publishes a snapshot."""

    def __init__(self, number: int, parent: StreamExecutor):
        super().__init__()
        self.number = number
        self.parent = parent
        self.snapshot: dict[str, Any] | None = None
        self.ready = threading.Event()

    def run_on(self, executor: StreamExecutor) -> None:
        if self.number > 1 and executor.text_:
            executor.backend.commit_lazy_operations(executor)
        self.snapshot = executor.snapshot()
        self.ready.set()

    def wait(self) -> dict[str, Any]:
        while not self.ready.wait(0.05):
            if self.parent.error_ is not None or self.parent.is_finished:
                raise ProgramError("the program failed before its fork point")
        return self.snapshot


class _ForkStart(SglExpr):
    """Runs first in a fork branch: waits for the fork point and starts from its state."""

    def __init__(self, point: _ForkPoint):
        super().__init__()
        self.point = point

    def run_on(self, executor: StreamExecutor) -> None:
        executor.copy_state_from(self.point.wait())


class CompiledFunction:
    def __init__(self, tracer: TracerProgramState, function: Any):
        self.function = function
        self.root = tracer
        self.streams = self._reachable_streams(tracer)

    @staticmethod
    def _reachable_streams(root: TracerProgramState) -> list[TracerProgramState]:
        """The root and every stream it depends on, in trace order."""
        by_pid = {root.pid: root, **{s.pid: s for s in root.child_states}}
        needed, stack = {root.pid}, [root]
        while stack:
            for node in stack.pop().nodes:
                deps: list[Any] = []
                if isinstance(node, SglVariable) and node.source is not None:
                    deps.append(node.source.pid)
                elif isinstance(node, SglGetForkItem):
                    deps.append(node.prev_node.pid)
                elif isinstance(node, SglConcateAndAppend):
                    deps.extend(state.pid for state in node.states)
                for pid in deps:
                    if pid in by_pid and pid not in needed:
                        needed.add(pid)
                        stack.append(by_pid[pid])
        return [s for pid, s in by_pid.items() if pid in needed]

    def print_graph(self) -> str:
        """Every stream's nodes, `stream i: %id = %prev + node`."""
        lines = []
        for i, stream in enumerate(self.streams):
            for node in stream.nodes:
                prev = "" if node.prev_node is None else f"%{node.prev_node.node_id} + "
                lines.append(f"stream {i:2d}: %{node.node_id} = {prev}{node!r}")
        return "\n".join(lines) + "\n"

    # --- running -------------------------------------------------------------------------------

    def run_internal(
        self, backend: Any, kwargs: dict[str, Any], default_sampling_para: SglSamplingParams
    ) -> ProgramState:
        backend = resolve_backend(backend)
        kwargs = {**kwargs, **self.function.bind_arguments}
        executors = {
            s.pid: StreamExecutor(backend, kwargs if s is self.root else {}, default_sampling_para)
            for s in self.streams
        }
        forks: dict[int, _ForkPoint] = {}
        plans = [
            (executors[s.pid], [self._bind(n, executors, forks, kwargs) for n in s.nodes])
            for s in self.streams
        ]
        for executor, nodes in plans:  # every event exists before any stream reads one
            for node in nodes:
                executor.register(node)
        for executor, nodes in plans:
            for node in nodes:
                executor.submit(node, register=False)
        for executor in executors.values():
            executor.end()
        return ProgramState(executors[self.root.pid])

    @staticmethod
    def _bind(node: SglExpr, executors, forks: dict[int, _ForkPoint], kwargs) -> SglExpr:
        """The node this run executes for traced `node` (placeholders get their values)."""
        if isinstance(node, SglArgument):
            if node.name not in kwargs:
                raise TypeError(f"missing program argument {node.name!r}")
            return as_expr(kwargs[node.name])
        if isinstance(node, SglVariable):
            bound = SglVariable(node.name, node.source)
            bound.source_stream_executor = executors[node.source.pid]
            return bound
        if isinstance(node, SglFork):
            point = forks.setdefault(node.node_id, _ForkPoint(node.number, executors[node.pid]))
            return point
        if isinstance(node, SglGetForkItem):
            fork = node.prev_node
            point = forks.setdefault(fork.node_id, _ForkPoint(fork.number, executors[fork.pid]))
            return _ForkStart(point)
        if isinstance(node, SglConcateAndAppend):
            return SglConcateAndAppend([ProgramState(executors[s.pid]) for s in node.states])
        return node

    def run(
        self,
        *,
        max_new_tokens: int = 128,
        stop: str | list[str] = (),
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        backend: Any = None,
        **kwargs: Any,
    ) -> ProgramState:
        defaults = SglSamplingParams(
            max_new_tokens=max_new_tokens,
            stop=stop or (),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )
        return self.run_internal(backend, kwargs, defaults)

    def run_batch(
        self,
        batch_kwargs: list[dict[str, Any]],
        *,
        max_new_tokens: int = 128,
        stop: str | list[str] = (),
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = -1,
        min_p: float = 0.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        backend: Any = None,
        num_threads: int | str = "auto",
    ) -> list[ProgramState]:
        if not batch_kwargs:
            return []
        backend = resolve_backend(backend)
        defaults = SglSamplingParams(
            max_new_tokens=max_new_tokens,
            stop=stop or (),
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
        )
        if len(batch_kwargs) > 1:
            cache_program(self.function, backend)
        if num_threads == "auto":
            num_threads = os.cpu_count() or 1
        num_threads = max(1, min(int(num_threads), len(batch_kwargs)))

        def one(kwargs: dict[str, Any]) -> ProgramState:
            state = self.run_internal(backend, kwargs, defaults)
            state.sync()
            return state

        with ThreadPoolExecutor(num_threads) as pool:
            return list(pool.map(one, batch_kwargs))
