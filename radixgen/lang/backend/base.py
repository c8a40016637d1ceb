"""The backend interface: what the interpreter asks of a model provider.

Every call receives the program's executor `s` (a `StreamExecutor`); backends read `s.text_`
(the full program text so far), `s.messages_` (the chat turns) and `s.images_`, and never mutate
the executor except where noted. The frontend is stateless towards the model: each `generate`
sends the whole text, and reuse comes from the runtime's radix cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from radixgen.lang.chat_template import ChatTemplate, get_chat_template
from radixgen.lang.choices import ChoicesDecision, ChoicesSamplingMethod
from radixgen.lang.ir import SglSamplingParams

if TYPE_CHECKING:
    from radixgen.lang.interpreter import StreamExecutor


class BaseBackend:
    support_concate_and_append = False
    """True if `join("concate_and_append")` can concatenate KV caches server-side."""
    is_chat_model = False
    """True for chat-only APIs: gens must follow `assistant` (or use API speculation)."""

    def __init__(self) -> None:
        self.chat_template: ChatTemplate = get_chat_template("default")

    def get_chat_template(self) -> ChatTemplate:
        return self.chat_template

    # --- cache hints (no-ops unless the backend has a prefix cache) ---------------------------

    def cache_prefix(self, prefix_str: str) -> None:
        """Compute and cache `prefix_str` now (a prefill-only request)."""

    def uncache_prefix(self, rid: str) -> None:
        pass

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        """Compute and cache `s.text_` now; sent before a fork so branches share it."""

    def fill_image(self, s: StreamExecutor) -> None:
        """Called after an image was appended to `s`."""

    # --- program lifecycle -----------------------------------------------------------------

    def begin_program(self, s: StreamExecutor) -> None:
        pass

    def end_program(self, s: StreamExecutor) -> None:
        pass

    def end_request(self, rid: str | list[str]) -> None:
        pass

    def fork_program(
        self, src: StreamExecutor, dst: list[StreamExecutor], position_ids_offset=None
    ):
        pass

    # --- generation ------------------------------------------------------------------------

    def generate(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> tuple[str | list[str], dict[str, Any] | list[dict[str, Any]]]:
        """Continue `s.text_`; returns (completion, meta_info), or lists of both when n > 1."""
        raise NotImplementedError(f"{type(self).__name__} cannot generate")

    def generate_stream(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Like `generate`, yielding (new text, meta_info so far) pieces."""
        raise NotImplementedError(f"{type(self).__name__} cannot stream")

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod,
    ) -> ChoicesDecision:
        """Pick the choice that best continues `s.text_`."""
        raise NotImplementedError(f"{type(self).__name__} cannot select")

    def concatenate_and_append(self, src_rids: list[str], dst_rid: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} cannot concatenate KV caches")

    # --- administration --------------------------------------------------------------------

    def flush_cache(self) -> Any:
        pass

    def get_server_info(self) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__name__} has no server info")

    def shutdown(self) -> None:
        pass
