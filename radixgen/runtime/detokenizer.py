"""Incremental detokenization with stop strings.

Text is committed only when the newly decoded piece does not end in U+FFFD, so a stream never
shows half of a multi-byte character. Decoding starts from a few prompt tokens of context (their
text is not emitted), so tokenizers that drop a word's leading space at the start of a sequence
still render it. Stop strings and stop regexes (stop_regex.py) are searched across token
boundaries in the committed text; the leftmost match of either kind ends the text (a stop string
wins a tie). The streamed (`visible_text`) view holds back any tail that could still become a
stop string, and everything from the regexes' frontier on (the earliest position a regex match
could still start), so a client never sees text that is later trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

from radixgen.runtime.stop_regex import StopRegexMatcher

CONTEXT_TOKENS = 5  # prompt tokens decoded as context (SGLang's INIT_INCREMENTAL_... offset)


class IncrementalDetokenizer:
    def __init__(
        self,
        tokenizer,
        prompt_ids: Sequence[int],
        stop: Sequence[str] = (),
        skip_special_tokens: bool = True,
        no_stop_trim: bool = False,
        stop_regex: Sequence[str] = (),
    ):
        self.tokenizer = tokenizer
        self.context = list(prompt_ids[-CONTEXT_TOKENS:])
        self.stop = tuple(stop)
        self.max_stop_len = max((len(s) for s in self.stop), default=0)
        self.skip_special_tokens = skip_special_tokens
        self.no_stop_trim = no_stop_trim
        self.stop_regex = StopRegexMatcher(stop_regex) if stop_regex else None
        self.text = ""  # committed output text (trimmed at a matched stop string)
        self._surr = 0  # ids[_surr:_read] were decoded last time (context for the next piece)
        self._read = len(self.context)
        self.matched_stop: str | None = None

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def update(self, output_ids: Sequence[int], final: bool = False) -> str | None:
        """Feed the output ids so far (only their new tail is decoded). Returns the stop string,
        or the stop regex's pattern, if one now matches the text (the text is then trimmed),
        else None. With `final`, any incomplete character at the end is committed as U+FFFD.
        Raises `StopRegexTimeout` when a stop regex is too slow to match."""
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
        best: tuple[int, int, str] | None = None  # (start, end, what matched)
        for stop in self.stop:
            at = self.text.find(stop, search_from)
            if at != -1 and (best is None or at < best[0]):
                best = (at, at + len(stop), stop)
        if self.stop_regex is not None:
            found = self.stop_regex.search(self.text)
            if found is not None and (best is None or found[0] < best[0]):
                best = found
        if best is None:
            return None
        start, end, matched = best
        self.text = self.text[:end] if self.no_stop_trim else self.text[:start]
        self.matched_stop = matched
        return matched

    def visible_text(self, finished: bool) -> str:
        """Text safe to stream: while running, without a tail that may begin a stop string and
        without the text from the stop regexes' frontier on."""
        if finished:
            return self.text
        end = len(self.text) if self.stop_regex is None else self.stop_regex.frontier
        hold = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.text)), hold, -1):
                if self.text.endswith(stop[:k]):
                    hold = k
                    break
        return self.text[: min(end, len(self.text) - hold)]
