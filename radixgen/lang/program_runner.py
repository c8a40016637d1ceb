"""Running programs: one (`run_program`) or many on a thread pool (`run_program_batch`).

A program function runs on the caller's thread (or its own with `stream=True`) and only submits
nodes; its executor's worker does the generation. Batches first cache the program's constant
prefix (found by tracing) so the first wave of requests does not all compute it. Which backend a
program runs on is `backend_choice.py`'s.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import tqdm

from radixgen.lang.backend_choice import calling_backend, resolve_backend
from radixgen.lang.global_config import global_config
from radixgen.lang.interpreter import ProgramError, StreamExecutor
from radixgen.lang.ir import SglSamplingParams
from radixgen.lang.state import ProgramState
from radixgen.lang.tracer import extract_prefix_by_tracing

if TYPE_CHECKING:
    from radixgen.lang.function import SglFunction

PRECACHE_MIN_CHARS = 64  # shorter prefixes are not worth a separate request
GENERATOR_CHUNK = 200


def _call_program(state: ProgramState, program: SglFunction, args: tuple, kwargs: dict) -> None:
    token = calling_backend.set(state.stream_executor.backend)
    try:
        state.ret_value = program.func(state, *args, **kwargs)
    except ProgramError:
        pass  # a backend call failed: the state carries it (`state.error()`)
    finally:
        calling_backend.reset(token)
        state.stream_executor.end()


def _call_program_in_thread(state, program, args, kwargs) -> None:
    try:
        _call_program(state, program, args, kwargs)
    except Exception as exc:  # nobody else can catch it: report it through the state
        state.stream_executor.fail(exc)


def run_program(
    program: SglFunction,
    backend: Any,
    func_args: tuple,
    func_kwargs: dict[str, Any],
    default_sampling_para: SglSamplingParams,
    stream: bool,
    sync: bool = False,
    use_thread: bool = True,
) -> ProgramState:
    backend = resolve_backend(backend)
    func_kwargs = {**func_kwargs, **program.bind_arguments}
    executor = StreamExecutor(
        backend,
        func_kwargs,
        default_sampling_para,
        chat_template=None,
        stream=stream,
        num_api_spec_tokens=program.num_api_spec_tokens,
        use_thread=use_thread,
    )
    state = ProgramState(executor)
    if stream:
        args = (state, program, func_args, func_kwargs)
        threading.Thread(target=_call_program_in_thread, args=args, daemon=True).start()
        return state
    _call_program(state, program, func_args, func_kwargs)
    if sync:
        executor.sync()
    if global_config.verbosity >= 2:
        print(state.text())
    return state


def cache_program(program: SglFunction, backend: Any) -> str:
    """Cache the program's constant prefix if it is longer than 64 characters; returns it."""
    prefix = extract_prefix_by_tracing(program, backend)
    if len(prefix) > PRECACHE_MIN_CHARS:
        backend.cache_prefix(prefix)
    return prefix


def run_program_batch(
    program: SglFunction,
    backend: Any,
    batch_arguments: list[dict[str, Any]],
    default_sampling_para: SglSamplingParams,
    num_threads: int | str,
    progress_bar: bool,
    generator_style: bool = False,
) -> list[ProgramState] | Iterator[ProgramState]:
    """Run one program per argument dict on a thread pool; results in input order."""
    backend = resolve_backend(backend)
    if global_config.enable_precache_with_tracing and len(batch_arguments) > 1:
        cache_program(program, backend)
    if num_threads == "auto":
        num_threads = max(96, (os.cpu_count() or 1) * 16)
    num_threads = max(1, min(int(num_threads), len(batch_arguments)))

    def one(arguments: dict[str, Any]) -> ProgramState:
        return run_program(
            program, backend, (), arguments, default_sampling_para, stream=False, sync=True
        )

    if generator_style:
        return _batch_generator(one, batch_arguments, num_threads, progress_bar)
    bar = tqdm.tqdm(total=len(batch_arguments)) if progress_bar else None
    try:
        if num_threads == 1:
            states = []
            for arguments in batch_arguments:
                states.append(one(arguments))
                if bar is not None:
                    bar.update()
            return states
        with ThreadPoolExecutor(num_threads) as pool:
            futures = [pool.submit(one, arguments) for arguments in batch_arguments]
            if bar is not None:
                for future in futures:
                    future.add_done_callback(lambda _: bar.update())
            return [f.result() for f in futures]
    finally:
        if bar is not None:
            bar.close()


def _batch_generator(one, batch_arguments, num_threads, progress_bar) -> Iterator[ProgramState]:
    """Yield states in order, submitting work in chunks so results flow before the end."""
    bar = tqdm.tqdm(total=len(batch_arguments)) if progress_bar else None
    try:
        with ThreadPoolExecutor(num_threads) as pool:
            for start in range(0, len(batch_arguments), GENERATOR_CHUNK):
                chunk = batch_arguments[start : start + GENERATOR_CHUNK]
                futures = [pool.submit(one, arguments) for arguments in chunk]
                for future in futures:
                    yield future.result()
                    if bar is not None:
                        bar.update()
    finally:
        if bar is not None:
            bar.close()
