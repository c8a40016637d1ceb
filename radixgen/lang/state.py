"""`ProgramState` (the `s` of a program) and `ProgramStateGroup` (what `s.fork(n)` returns).

A state is a thin handle on its `StreamExecutor`: `s += expr` submits, `s["x"]` waits for a
variable, `text()`/`messages()`/`error()` wait for everything submitted so far. With
`run(stream=True)` the program runs on its own thread and `text_iter` / `text_async_iter` yield
text as it is generated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from radixgen.lang.interpreter import StreamExecutor
from radixgen.lang.ir import (
    SglConcateAndAppend,
    SglExpr,
    SglExprList,
    SglRoleBegin,
    SglRoleEnd,
    SglVarScopeBegin,
    SglVarScopeEnd,
    as_expr,
)


class ProgramState:
    """The state of one running program."""

    def __init__(self, stream_executor: StreamExecutor):
        self.stream_executor = stream_executor
        self.ret_value: Any = None  # what the program function returned

    def _submit(self, expr: Any) -> None:
        self.stream_executor.submit(expr)

    # --- building --------------------------------------------------------------------------

    def __iadd__(self, other: Any) -> ProgramState:
        if other is None:
            raise ValueError("cannot append None to a program state")
        self._submit(other)
        return self

    def _role(self, role: str, expr: Any = None):
        if expr is None:
            return self._role_scope(role)
        role_expr = SglExprList([SglRoleBegin(role), as_expr(expr), SglRoleEnd(role)])
        self._submit(role_expr)
        return role_expr

    @contextlib.contextmanager
    def _role_scope(self, role: str) -> Iterator[None]:
        self._submit(SglRoleBegin(role))
        yield
        self._submit(SglRoleEnd(role))

    def system(self, expr: Any = None):
        """Append a system turn, or with no argument, a context manager for one."""
        return self._role("system", expr)

    def user(self, expr: Any = None):
        return self._role("user", expr)

    def assistant(self, expr: Any = None):
        return self._role("assistant", expr)

    @contextlib.contextmanager
    def var_scope(self, name: str) -> Iterator[None]:
        """Capture the text produced inside the block into variable `name`."""
        self._submit(SglVarScopeBegin(name))
        yield
        self._submit(SglVarScopeEnd(name))

    def fork(self, size: int = 1, position_ids_offset: list[int] | None = None):
        """`size` branches that start from this state's text (committed to the cache once)."""
        executors = self.stream_executor.fork(size, position_ids_offset)
        return ProgramStateGroup([ProgramState(e) for e in executors], self)

    @contextlib.contextmanager
    def copy(self, position_ids_offset: list[int] | None = None) -> Iterator[ProgramState]:
        """A one-branch fork whose new variables are gathered back when the block ends."""
        group = self.fork(1, position_ids_offset)
        try:
            yield group[0]
        finally:
            group.join()

    def _join(self, states: list[ProgramState], mode: str) -> None:
        parent = self.stream_executor
        if mode == "gather_variable":
            for state in states:
                state.stream_executor.sync()
            names = [n for n in states[0].stream_executor.variable_event] if states else []
            for name in names:
                values = [st.stream_executor.variables.get(name) for st in states]
                metas = [st.stream_executor.meta_info.get(name) for st in states]
                parent.variables[name] = values
                parent.meta_info[name] = metas
                parent.variable_event.pop(name, None)  # ready: nothing to wait for
        elif mode == "concate_and_append":
            self._submit(SglConcateAndAppend(states))
            parent.sync()
        else:
            raise ValueError(f"invalid join mode: {mode!r}")
        for state in states:
            state.stream_executor.end()

    # --- reading ---------------------------------------------------------------------------

    def get_var(self, name: str) -> Any:
        return self.stream_executor.get_var(name)

    def set_var(self, name: str, value: Any) -> None:
        self.stream_executor.set_var(name, value)

    def get_meta_info(self, name: str, timeout: float | None = None) -> Any:
        """The backend's meta_info for the gen/select that set `name` (waits for it)."""
        return self.stream_executor.get_meta_info(name, timeout)

    def __getitem__(self, name: str) -> Any:
        return self.get_var(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.set_var(name, value)

    def __contains__(self, name: str) -> bool:
        return name in self.stream_executor.variables

    def text(self) -> str:
        return self.stream_executor.text()

    def messages(self) -> list[dict[str, Any]]:
        return self.stream_executor.messages()

    def sync(self) -> None:
        self.stream_executor.sync()

    def error(self) -> BaseException | None:
        """The exception that stopped the program, or None (waits for pending nodes)."""
        return self.stream_executor.error()

    # --- streaming -------------------------------------------------------------------------

    def _read(self, var_name: str | None, sent: int) -> tuple[str, int, bool, Any]:
        """(new text since `sent`, new `sent`, finished?, meta_info) of the text or a variable.
        "Finished" is read before the text, so the last read always sees the final text."""
        exe = self.stream_executor
        if var_name is None:
            done = exe.is_finished
            current = exe.text_
        else:
            event = exe.variable_event.get(var_name)
            done = exe.is_finished or (event is not None and event.is_set())
            current = exe.variables.get(var_name, "")
            current = current if isinstance(current, str) else str(current)
        meta_info = exe.meta_info.get(var_name) if var_name is not None else None
        return current[sent:], len(current), done, meta_info

    def _wait_change(self, seen: int) -> int:
        """Block until the executor changed after version `seen`; returns the new version."""
        exe = self.stream_executor
        with exe.changed:
            exe.changed.wait_for(lambda: exe.version != seen)
            return exe.version

    def text_iter(self, var_name: str | None = None) -> Iterator[str]:
        """New text of the program (or of one variable) as it is generated; without
        `stream=True`, the final value once."""
        if not self.stream_executor.stream:
            yield self.text() if var_name is None else self.get_var(var_name)
            return
        sent, seen, done = 0, -1, False
        while not done:
            seen = self._wait_change(seen)
            piece, sent, done, _ = self._read(var_name, sent)
            if piece:
                yield piece

    async def text_async_iter(
        self, var_name: str | None = None, return_meta_data: bool = False
    ) -> AsyncIterator[Any]:
        """Async `text_iter`; with `return_meta_data` (and a variable) yields (text, meta_info)."""
        with_meta = return_meta_data and var_name is not None
        if not self.stream_executor.stream:
            value = self.text() if var_name is None else self.get_var(var_name)
            yield (value, self.stream_executor.meta_info.get(var_name)) if with_meta else value
            return
        sent, seen, done = 0, -1, False
        while not done:
            seen = await asyncio.to_thread(self._wait_change, seen)
            piece, sent, done, meta_info = self._read(var_name, sent)
            if piece:
                yield (piece, meta_info) if with_meta else piece

    def __repr__(self) -> str:
        return f"ProgramState({self.text()!r})"

    def __del__(self) -> None:
        executor = self.__dict__.get("stream_executor")
        if isinstance(executor, StreamExecutor):
            with contextlib.suppress(Exception):
                executor.end()


class ProgramStateGroup:
    """The branches of `s.fork(n)`: `forks[i] += ...`, `forks += f(i)`, `forks.join()`."""

    def __init__(self, states: list[ProgramState], src_state: ProgramState | None = None):
        self.states = states
        self.src_state = src_state

    def join(self, mode: str = "gather_variable") -> None:
        """Wait for the branches. "gather_variable": each variable the branches set becomes a
        list in the parent (branches stay readable through `forks[i]`); "concate_and_append":
        the branches' new text is appended to the parent's."""
        self.src_state._join(self.states, mode)

    def __getitem__(self, i: int) -> ProgramState:
        return self.states[i]

    def __setitem__(self, i: int, value: ProgramState) -> None:
        if value is not self.states[i]:
            raise TypeError("fork branches cannot be replaced; use forks[i] += expr")

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.states)

    def __iadd__(self, other: Any) -> ProgramStateGroup:
        if isinstance(other, SglExpr | str):
            for state in self.states:
                state += other
        elif callable(other):
            for i, state in enumerate(self.states):
                state += other(i)
        elif isinstance(other, (list, tuple)):
            for state, expr in zip(self.states, other, strict=True):
                state += expr
        else:
            raise TypeError(f"cannot append {other!r} to forks")
        return self
