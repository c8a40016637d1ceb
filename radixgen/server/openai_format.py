"""Engine outputs -> OpenAI response pieces: finish reasons, logprobs, usage."""

from __future__ import annotations

from typing import Any

MIN_LOGPROB = -9999.0  # JSON has no -inf; OpenAI's floor


def finish_reason(meta: dict[str, Any]) -> str | None:
    reason = meta.get("finish_reason")
    return None if reason is None else reason["type"]


def _finite(lp: float | None) -> float | None:
    return None if lp is None else max(float(lp), MIN_LOGPROB)


def completion_logprobs(
    entries: list[list], tops: list[list[list]] | None, start_offset: int = 0
) -> dict[str, Any]:
    """`[logprob, id, text]` triples (+ per-position top lists) -> the completions format."""
    tokens, offsets, offset = [], [], start_offset
    for _, _, text in entries:
        tokens.append(text)
        offsets.append(offset)
        offset += len(text)
    top_logprobs = None
    if tops is not None:
        top_logprobs = [None if top is None else {t[2]: _finite(t[0]) for t in top} for top in tops]
    return {
        "tokens": tokens,
        "token_logprobs": [_finite(e[0]) for e in entries],
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def chat_logprobs(entries: list[list], tops: list[list[list]] | None) -> dict[str, Any]:
    def item(entry: list) -> dict[str, Any]:
        return {
            "token": entry[2],
            "logprob": _finite(entry[0]),
            "bytes": list(entry[2].encode("utf-8")),
        }

    content = []
    for i, entry in enumerate(entries):
        content.append({**item(entry), "top_logprobs": [item(t) for t in tops[i]] if tops else []})
    return {"content": content}


def usage(outputs: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Prompt (and cached) tokens counted once per prompt, completion tokens over all choices."""
    firsts = [o["meta_info"] for i, o in enumerate(outputs) if i % n == 0]
    prompt = sum(m["prompt_tokens"] for m in firsts)
    completion = sum(o["meta_info"]["completion_tokens"] for o in outputs)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(m["cached_tokens"] for m in firsts)},
    }
