"""The interpreter: one `StreamExecutor` (a worker thread and a queue) per program state.

`s += expr` puts `expr` on the executor's queue and returns at once, so Python control flow runs
ahead of generation; `s["name"]` waits for that variable, `s.text()` waits for the queue to
drain. The worker executes nodes in order through a dispatch table keyed by node type.

Failure: the first exception a node raises is kept (`error()`); every variable event is
released, later nodes are skipped, and `s["name"]` for a value that was never produced raises
`ProgramError` from that exception. Nothing waits forever on a failed program.
"""

from __future__ import annotations

import base64
import contextvars
import logging
import os
import queue
import threading
import uuid
from typing import Any

from radixgen.lang import speculative
from radixgen.lang.chat_template import ChatTemplate
from radixgen.lang.ir import (
    SglCommitLazy,
    SglConcateAndAppend,
    SglConstantText,
    SglExpr,
    SglExprList,
    SglGen,
    SglImage,
    SglRoleBegin,
    SglRoleEnd,
    SglSamplingParams,
    SglSelect,
    SglSeparateReasoning,
    SglVariable,
    SglVarScopeBegin,
    SglVarScopeEnd,
    SglVideo,
    as_expr,
)

logger = logging.getLogger(__name__)


class ProgramError(RuntimeError):
    """A variable was read from a program that failed before producing it. The backend's
    exception is the cause, and `state.error()` returns it."""


class StreamExecutor:
    """Executes one program state's nodes, in order, on its own worker thread."""

    def __init__(
        self,
        backend: Any,
        arguments: dict[str, Any],
        default_sampling_para: SglSamplingParams,
        chat_template: ChatTemplate | None = None,
        stream: bool = False,
        num_api_spec_tokens: int | None = None,
        use_thread: bool = True,
    ):
        self.sid = uuid.uuid4().hex
        self.backend = backend
        self.arguments = arguments
        self.default_sampling_para = default_sampling_para
        self.stream = stream
        self.chat_template = chat_template or backend.get_chat_template()

        self.variables: dict[str, Any] = {}
        self.variable_event: dict[str, threading.Event] = {}
        self._pending: set[str] = set()  # registered variables not yet (re)set
        self._node_events: dict[int, threading.Event] = {}  # id(node) -> its variable's event
        self.meta_info: dict[str, Any] = {}
        self.text_ = ""  # the whole program text
        self.messages_: list[dict[str, Any]] = []  # closed chat turns, OpenAI format
        self.cur_role: str | None = None
        self.cur_role_begin_pos: int | None = None
        self.images_: list[tuple[str, str]] = []  # (path, base64) of every image
        self.cur_images: list[tuple[str, str]] = []  # images of the open turn
        self.fork_start_text_pos: int | None = None
        self.children: list[StreamExecutor] = []  # forked executors, ended with this one
        self._scope_starts: dict[str, int] = {}

        self.num_api_spec_tokens = num_api_spec_tokens
        self.speculated_text = ""  # completion models: text generated ahead of the program
        self.chat_spec: speculative.ChatSpeculation | None = None  # chat models: open turn

        self.error_: BaseException | None = None
        self.is_finished = False
        self.changed = threading.Condition()  # notified on new text, variables, or the end
        self.version = 0

        self.use_thread = use_thread
        self._ended = False
        if use_thread:
            self.queue: queue.Queue = queue.Queue()
            self.worker = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._work,),
                name=f"sgl-executor-{self.sid[:8]}",
                daemon=True,
            )
            self.worker.start()

    # --- submission (caller's thread) --------------------------------------------------------

    def submit(self, expr: Any, register: bool = True) -> None:
        """Queue `expr`; with `register`, first create the events of the variables it sets."""
        expr = as_expr(expr)
        if register:
            self.register(expr)
        if not self.use_thread:
            self._run_one(expr)
        elif self._ended:
            raise RuntimeError("this program state has ended and takes no more expressions")
        else:
            self.queue.put(expr)

    def register(self, expr: SglExpr) -> None:
        """Create a fresh event for every variable `expr` will set (a reused name waits for
        its newest value)."""
        if isinstance(expr, SglExprList):
            for child in expr.expr_list:
                self.register(child)
        elif isinstance(expr, _NAMED_NODES) and expr.name is not None:
            event = self.variable_event[expr.name] = threading.Event()
            self._node_events[id(expr)] = event
            self._pending.add(expr.name)
            if self.error_ is not None:
                event.set()

    def sync(self) -> None:
        """Wait until every submitted node ran (or was skipped after a failure)."""
        if self.use_thread:
            self.queue.join()

    def end(self) -> None:
        """No more nodes: the worker exits after the queued ones. Ends forked children too."""
        if self.use_thread and not self._ended:
            self._ended = True
            self.queue.put(None)
        elif not self.use_thread:
            self._finish()
        for child in self.children:
            child.end()
        self.backend.end_program(self)

    # --- reading (any thread) ------------------------------------------------------------------

    def get_var(self, name: str) -> Any:
        event = self.variable_event.get(name)
        if event is not None:
            event.wait()
        failed = self.error_ is not None
        if name in self.variables and not (failed and name in self._pending):
            return self.variables[name]
        if failed:
            raise ProgramError(
                f"variable {name!r} was not produced: the program failed ({self.error_!r})"
            ) from self.error_
        raise KeyError(name)

    def set_var(self, name: str, value: Any) -> None:
        self.variables[name] = value

    def get_meta_info(self, name: str, timeout: float | None = None) -> Any:
        event = self.variable_event.get(name)
        if event is not None and not event.wait(timeout):
            raise TimeoutError(f"timed out waiting for variable {name!r}")
        return self.meta_info.get(name)

    def text(self) -> str:
        self.sync()
        return self.text_

    def messages(self) -> list[dict[str, Any]]:
        self.sync()
        return self.messages_

    def error(self) -> BaseException | None:
        self.sync()
        return self.error_

    def fail(self, exc: BaseException) -> None:
        """Record `exc` as the program's error (if it has none) and release all waiters."""
        if self.error_ is None:
            self.error_ = exc
        for event in list(self.variable_event.values()):
            event.set()
        self._notify()

    # --- forking -----------------------------------------------------------------------------

    def fork(self, size: int = 1, position_ids_offset: list[int] | None = None):
        """`size` executors starting from this one's state. With size > 1 the current text is
        first committed (prefilled) once, so every branch reuses it from the radix cache."""
        size = int(size)
        if size > 1:
            self.submit(SglCommitLazy())
        self.sync()
        forks = [
            StreamExecutor(
                self.backend,
                self.arguments,
                self.default_sampling_para,
                self.chat_template,
                self.stream,
            )
            for _ in range(size)
        ]
        for child in forks:
            child.copy_state_from(self.snapshot())
        self.backend.fork_program(self, forks, position_ids_offset)
        self.children.extend(forks)
        return forks

    def snapshot(self) -> dict[str, Any]:
        """The state a fork starts from (copies, safe to hand to another thread)."""
        return {
            "variables": dict(self.variables),
            "meta_info": dict(self.meta_info),
            "text_": self.text_,
            "messages_": list(self.messages_),
            "cur_role": self.cur_role,
            "cur_role_begin_pos": self.cur_role_begin_pos,
            "images_": list(self.images_),
            "error_": self.error_,
        }

    def copy_state_from(self, snapshot: dict[str, Any]) -> None:
        """Start from a `snapshot()` (containers are copied: one snapshot may seed many)."""
        snapshot = dict(snapshot)
        error = snapshot.pop("error_", None)
        for name, value in snapshot.items():
            setattr(self, name, type(value)(value) if isinstance(value, (dict, list)) else value)
        self.fork_start_text_pos = len(self.text_)
        if error is not None:
            self.fail(error)

    # --- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            expr = self.queue.get()
            if expr is None:
                self.queue.task_done()
                break
            self._run_one(expr)
            self.queue.task_done()
        self._finish()

    def _run_one(self, expr: SglExpr) -> None:
        if self.error_ is None:
            try:
                self._execute(expr)
            except Exception as exc:
                logger.warning("program failed: %r", exc, exc_info=logger.isEnabledFor(10))
                self.fail(exc)
        else:
            self.fail(self.error_)  # skipped: release the events it registered
        self._notify()

    def _finish(self) -> None:
        self.is_finished = True
        self._notify()

    def _notify(self) -> None:
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    # --- execution (worker thread) -------------------------------------------------------------

    def _execute(self, expr: SglExpr) -> None:
        for cls in type(expr).__mro__:
            handler = _HANDLERS.get(cls)
            if handler is not None:
                handler(self, expr)
                return
        run_on = getattr(expr, "run_on", None)  # nodes that execute themselves (compiler)
        if run_on is None:
            raise TypeError(f"cannot execute {expr!r}")
        run_on(self)

    def _execute_list(self, expr: SglExprList) -> None:
        for child in expr.expr_list:
            self._execute(child)

    def _execute_constant(self, expr: SglConstantText) -> None:
        self.fill(expr.value)

    def fill(self, value: Any, prefix: bool = False) -> None:
        """Append text. Inside a speculated chat turn the text is recorded, not appended;
        against a completion-model speculation it consumes the matching prefix."""
        value = str(value)
        if self.chat_spec is not None and not prefix:
            self.chat_spec.record_fill(value)
            return
        if self.speculated_text.startswith(value):
            self.speculated_text = self.speculated_text[len(value) :]
        else:
            self.speculated_text = ""
        self.text_ += value

    def resolve_sampling_params(self, overrides: SglSamplingParams) -> SglSamplingParams:
        """`run()`'s defaults with the gen's explicit values; inside a role the chat
        template's stop strings are added."""
        params = self.default_sampling_para.resolve(overrides)
        if self.cur_role is not None and self.chat_template.stop_str:
            params.stop = [*params.stop_list(), *self.chat_template.stop_str]
        return params

    def set_result(self, node: SglExpr | None, name: str | None, value: Any, meta: Any) -> None:
        """Store a variable and release whoever waits for it. Each node sets its own event,
        so `s["x"]` after two queued `gen("x")` waits for the second."""
        if name is None:
            return
        self.variables[name] = value
        self.meta_info[name] = meta
        event = self._node_events.pop(id(node), None) if node is not None else None
        if event is None:
            event = self.variable_event.setdefault(name, threading.Event())
        if self.variable_event.get(name) is event:
            self._pending.discard(name)
        event.set()

    def _execute_gen(self, expr: SglGen) -> None:
        params = self.resolve_sampling_params(expr.sampling_params)
        if self.chat_spec is not None:
            self.chat_spec.record_gen(expr, params)
            return
        if self.stream:
            if self.num_api_spec_tokens is not None:
                raise ValueError("streaming does not support API speculative execution")
            self._gen_stream(expr, params)
            return
        if self.num_api_spec_tokens is not None:
            comp, meta_info = speculative.completion_gen(self, params)
        else:
            comp, meta_info = self.backend.generate(self, params)
        self.text_ += comp[0] if isinstance(comp, list) else comp
        self.set_result(expr, expr.name, comp, meta_info)

    def _gen_stream(self, expr: SglGen, params: SglSamplingParams) -> None:
        name = expr.name
        if name is not None:
            self.variables[name] = ""
        for piece, meta_info in self.backend.generate_stream(self, params):
            self.text_ += piece
            if name is not None:
                self.variables[name] += piece
                self.meta_info[name] = meta_info
            self._notify()
        self.set_result(expr, name, self.variables.get(name), self.meta_info.get(name))

    def _execute_select(self, expr: SglSelect) -> None:
        decision = self.backend.select(self, expr.choices, expr.temperature, expr.choices_method)
        self.text_ += decision.decision
        self.set_result(expr, expr.name, decision.decision, decision.meta_info)

    def _execute_variable(self, expr: SglVariable) -> None:
        source = expr.source_stream_executor or self
        self.fill(source.get_var(expr.name))

    def _execute_role_begin(self, expr: SglRoleBegin) -> None:
        if self.cur_role is not None:
            raise ValueError(f"nested roles are not allowed ({expr.role} inside {self.cur_role})")
        default_system = self.chat_template.default_system_prompt
        if not self.messages_ and expr.role != "system" and default_system:
            self._execute_role_begin(SglRoleBegin("system"))
            self.fill(default_system)
            self._execute_role_end(SglRoleEnd("system"))
        self.cur_role = expr.role
        prefix, _ = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self.fill(prefix, prefix=True)
        self.cur_role_begin_pos = len(self.text_)
        if (
            expr.role == "assistant"
            and self.num_api_spec_tokens is not None
            and self.backend.is_chat_model
        ):
            self.chat_spec = speculative.ChatSpeculation(self.num_api_spec_tokens)

    def _execute_role_end(self, expr: SglRoleEnd) -> None:
        if self.chat_spec is not None:
            spec, self.chat_spec = self.chat_spec, None
            spec.run(self)
        content = self.text_[self.cur_role_begin_pos :].lstrip()
        _, suffix = self.chat_template.get_prefix_and_suffix(expr.role, self.messages_)
        self.cur_role = None
        self.fill(suffix)
        if self.cur_images:  # OpenAI vision format
            parts: list[dict[str, Any]] = [{"type": "text", "text": content}]
            for _, data in self.cur_images:
                url = f"data:image/jpeg;base64,{data}"
                parts.append({"type": "image_url", "image_url": {"url": url}})
            self.messages_.append({"role": expr.role, "content": parts})
            self.cur_images = []
        else:
            self.messages_.append({"role": expr.role, "content": content})

    def _execute_image(self, expr: SglImage) -> None:
        data = _encode_image(expr.path)
        self.images_.append((expr.path, data))
        self.cur_images.append((expr.path, data))
        self.text_ += self.chat_template.image_token

    def _execute_video(self, expr: SglVideo) -> None:
        raise NotImplementedError("video input needs a vision model; radixgen serves text models")

    def _execute_var_scope_begin(self, expr: SglVarScopeBegin) -> None:
        self._scope_starts[expr.name] = len(self.text_)

    def _execute_var_scope_end(self, expr: SglVarScopeEnd) -> None:
        start = self._scope_starts.pop(expr.name)
        self.set_result(None, expr.name, self.text_[start:], None)

    def _execute_commit_lazy(self, expr: SglCommitLazy) -> None:
        if self.text_:
            self.backend.commit_lazy_operations(self)

    def _execute_concatenate_and_append(self, expr: SglConcateAndAppend) -> None:
        """The text path: append what each forked state added after the fork point."""
        pieces = []
        for state in expr.states:
            child = state.stream_executor
            child.sync()
            pieces.append(child.text_[child.fork_start_text_pos :])
        self.fill("".join(pieces))

    def _execute_separate_reasoning(self, expr: SglSeparateReasoning) -> None:
        if self.stream or expr.name is None:
            return
        source = expr.expr.name
        full = self.variables[source]
        reasoning, answer = split_reasoning(full)
        if self.text_.endswith(full):
            self.text_ = self.text_[: len(self.text_) - len(full)] + answer
        self.variables[source] = answer
        self.set_result(expr, expr.name, reasoning, None)


_NAMED_NODES = (SglGen, SglSelect, SglVarScopeBegin, SglSeparateReasoning)

_HANDLERS = {
    SglExprList: StreamExecutor._execute_list,
    SglConstantText: StreamExecutor._execute_constant,
    SglGen: StreamExecutor._execute_gen,
    SglSelect: StreamExecutor._execute_select,
    SglVariable: StreamExecutor._execute_variable,
    SglRoleBegin: StreamExecutor._execute_role_begin,
    SglRoleEnd: StreamExecutor._execute_role_end,
    SglImage: StreamExecutor._execute_image,
    SglVideo: StreamExecutor._execute_video,
    SglVarScopeBegin: StreamExecutor._execute_var_scope_begin,
    SglVarScopeEnd: StreamExecutor._execute_var_scope_end,
    SglCommitLazy: StreamExecutor._execute_commit_lazy,
    SglConcateAndAppend: StreamExecutor._execute_concatenate_and_append,
    SglSeparateReasoning: StreamExecutor._execute_separate_reasoning,
}


def split_reasoning(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a `<think>...</think>` completion; ("", text) without one."""
    end = text.find("</think>")
    if end == -1:
        return "", text
    reasoning = text[:end].replace("<think>", "", 1).strip()
    return reasoning, text[end + len("</think>") :].strip()


def _encode_image(image: str | bytes) -> str:
    """Base64 of an image file (or of raw bytes); other strings pass as given (URLs, base64)."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    if os.path.isfile(image):
        with open(image, "rb") as f:
            return base64.b64encode(f.read()).decode()
    return image
