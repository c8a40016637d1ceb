"""Incremental detokenization with stop strings.

Text is committed only when the newly decoded piece does not end in U+FFFD, so a stream never
shows half of a multi-byte character. Decoding starts from a few prompt tokens of context (their
text is not emitted), so tokenizers that drop a word's leading space at the start of a sequence
still render it. Stop strings are searched across token boundaries in the committed text; the
streamed (`visible_text`) view holds back any tail that could still become a stop string, so a
client never sees text that is later trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

CONTEXT_TOKENS = 5  # prompt tokens decoded as context (SGLang's INIT_INCREMENTAL_... offset)


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        stop: Sequence[str] = (),
        skip_special_tokens: bool = True,
        no_stop_trim: bool = False,
    ):
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-CONTEXT_TOKENS:])
        self.stop = tuple(stop)
        self.max_stop_len = max((len(s) for s in self.stop), default=0)
        self.skip_special_tokens = skip_special_tokens
        self.no_stop_trim = no_stop_trim
        self.text = ""  # committed output text (trimmed at a matched stop string)
        self._surr = 0  # ids[_surr:_read] were decoded last time (context for the next piece)
        self._read = len(self.context)
        self.matched_stop: str | None = None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def update(self, output_ids: Sequence[int], final: bool = False) -> str | None:
        """Feed the output ids so far (only their new tail is decoded). Returns the stop string
        if one is now complete in the text (the text is then trimmed), else None. With `final`,
        any incomplete character at the end is committed as U+FFFD."""
        if self.matched_stop is not None:
            return self.matched_stop
        ids = self.context + list(output_ids)
        if len(ids) == self._read and not final:
            return None
        prefix_text = self._decode(ids[self._surr : self._read])
        new_text = self._decode(ids[self._surr :])
        if len(new_text) <= len(prefix_text) or (new_text.endswith("\ufffd") and not final):
            return None
        piece = new_text[len(prefix_text) :]
        search_from = max(0, len(self.text) - self.max_stop_len + 1)
        self.text += piece
        self._surr, self._read = self._read, len(ids)
        return self._find_stop(search_from)

    def _find_stop(self, search_from: int) -> str | None:
        best: tuple[int, str] | None = None
        for stop in self.stop:
            at = self.text.find(stop, search_from)
            if at != -1 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return None
        at, stop = best
        self.text = self.text[: at + len(stop)] if self.no_stop_trim else self.text[:at]
        self.matched_stop = stop
        return stop

    def visible_text(self, finished: bool) -> str:
        """Text safe to stream: while running, without a tail that may begin a stop string."""
        if finished or not self.stop:
            return self.text
        hold = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.text)), hold, -1):
                if self.text.endswith(stop[:k]):
                    hold = k
                    break
        return self.text[: len(self.text) - hold] if hold else self.text
