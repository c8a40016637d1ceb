"""A language backend over Hugging Face transformers `generate`, without any cross-call cache.

Every `gen` is one `model.generate` call on the whole program text: the KV cache lives only
inside that call, so nothing computed for one call is reused by the next (the baseline the
paper's "no cache" systems represent). Calls are serialized (one model, two cores); `select`
and constrained gens are not supported (the runner marks those workloads n/a).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.workloads.recording import Request, RequestLog
from radixgen.lang.backend.base import BaseBackend
from radixgen.lang.chat_template import get_chat_template
from radixgen.lang.ir import SglSamplingParams

if TYPE_CHECKING:
    from radixgen.lang.interpreter import StreamExecutor


class _StopOnStrings:
    """A transformers stopping criterion: stop once the new text contains a stop string."""

    def __init__(self, tokenizer: Any, prompt_len: int, stops: list[str]):
        self.tokenizer, self.prompt_len, self.stops = tokenizer, prompt_len, stops

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        text = self.tokenizer.decode(input_ids[0, self.prompt_len :], skip_special_tokens=True)
        done = any(stop in text for stop in self.stops)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool)


class HFBackend(BaseBackend):
    def __init__(self, model: Any, tokenizer: Any, log: RequestLog, chat_template: str):
        """`model`: a transformers causal LM; `tokenizer`: the same one radixgen uses."""
        super().__init__()
        self.model, self.tokenizer, self.log = model, tokenizer, log
        self.chat_template = get_chat_template(chat_template)
        self._lock = threading.Lock()

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams):
        from transformers import StoppingCriteriaList

        p = sampling_params
        if p.regex is not None or p.json_schema is not None or p.dtype is not None:
            raise NotImplementedError("the transformers backend has no constrained decoding")
        ids = self.tokenizer(s.text_)["input_ids"]
        stops = p.stop_list()
        kwargs: dict[str, Any] = {"max_new_tokens": p.max_new_tokens, "do_sample": False}
        if p.temperature > 1e-5:
            kwargs.update(do_sample=True, temperature=p.temperature, top_p=p.top_p)
        if stops:
            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_StopOnStrings(self.tokenizer, len(ids), stops)]
            )
        with self._lock, torch.inference_mode():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                eos_token_id=self.tokenizer.eos_token_id,
                pad_token_id=self.tokenizer.eos_token_id,
                **kwargs,
            )
        new = out[0, len(ids) :].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        cut = min((text.find(stop) for stop in stops if stop in text), default=-1)
        text = text[:cut] if cut >= 0 else text
        self.log.add(Request(s.text_, len(new), new))
        meta = {"prompt_tokens": len(ids), "completion_tokens": len(new), "cached_tokens": 0}
        return text, meta
