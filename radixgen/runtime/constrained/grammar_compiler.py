"""`GrammarCompiler`: sampling params' `regex` / `json_schema` / `ebnf` -> a ready `Grammar`.

The grammar engine is llguidance (Rust; compiles regex, JSON schema and Lark/GBNF grammars against
the tokenizer lazily, so compilation takes milliseconds and masks ~20 us per step). Why not
xgrammar: it pulls triton and a TVM runtime into a CPU-only install for a mask we apply on the
CPU anyway; why not outlines-core: no Lark/EBNF and a full token-level FSM built up front.

Contract:
- `compile(params)` runs on the caller's thread (the engine's, never the scheduler's): a request
  waits for its grammar, the running batch does not. An invalid regex, schema or grammar raises
  `InvalidRequestError` naming the field, before the request exists.
- Compiled grammars are cached by `(kind, source)`; every request gets its own copy.
- JSON is generated compactly with fixed separators (`{"a": 1, "b": [2, 3]}`): no free
  whitespace, so the model cannot stall in whitespace, and keys and punctuation are forced text
  that jump-forward skips.
- Objects that list `properties` admit no others unless `additionalProperties` says so (the
  "strict mode" of xgrammar, SGLang's default engine): small models otherwise keep inventing keys.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from radixgen.runtime.constrained.grammar import Grammar, short_error
from radixgen.runtime.sampling_params import (
    CONSTRAINT_FIELDS,
    InvalidRequestError,
    SamplingParams,
)

CACHE_SIZE = 256
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def constraint_of(params: SamplingParams) -> tuple[str, str] | None:
    """The request's `(kind, source)` constraint, or None (at most one is set; verified)."""
    for kind in CONSTRAINT_FIELDS:
        source = getattr(params, kind)
        if source is not None:
            return kind, source
    return None


class GrammarCompiler:
    def __init__(self, tokenizer: Any, vocab_size: int):
        """`tokenizer`: a transformers fast tokenizer; `vocab_size`: the model's logits width."""
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._ll_tokenizer = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()  # key -> template matcher

    @property
    def ll_tokenizer(self) -> Any:
        """llguidance's view of the vocabulary, built once (~0.4 s) on first use."""
        with self._lock:
            if self._ll_tokenizer is None:
                import llguidance.hf

                self._ll_tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer)
            return self._ll_tokenizer

    def compile(self, params: SamplingParams) -> Grammar | None:
        """A fresh `Grammar` for the request's constraint, or None when it has none."""
        constraint = constraint_of(params)
        if constraint is None:
            return None
        with self._lock:
            template = self._cache.get(constraint)
            if template is not None:
                self._cache.move_to_end(constraint)
                return Grammar(template.deep_copy())
        template = self._build(*constraint)  # outside the lock: other keys compile meanwhile
        with self._lock:
            self._cache[constraint] = template
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return Grammar(template.deep_copy())

    def _build(self, kind: str, source: str) -> Any:
        from llguidance import LLMatcher

        grammar = _grammar_text(kind, source)
        matcher = LLMatcher(self.ll_tokenizer, grammar, log_level=0)
        # The first mask builds the lexer's start state: for some patterns (a{100000}) that is
        # most of a second, or fails on a lexer limit. Pay it here, on the caller's thread and
        # once per cached template, not on the scheduler thread with every request waiting.
        if not matcher.is_error():
            matcher.compute_bitmask()
        if matcher.is_error():
            raise InvalidRequestError(f"invalid {kind}: {short_error(matcher.get_error())}", kind)
        return matcher


def _grammar_text(kind: str, source: str) -> str:
    """llguidance's grammar for one constraint (validity is checked when the matcher is built)."""
    from llguidance import LLMatcher
    from llguidance.gbnf_to_lark import any_to_lark

    if not isinstance(source, str) or not source.strip():
        raise InvalidRequestError(f"{kind} must be a non-empty string", kind)
    if kind == "regex":
        return LLMatcher.grammar_from_regex(source)
    if kind == "json_schema":
        try:
            schema = json.loads(source)
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"json_schema is not valid JSON: {exc.msg}", kind) from exc
        if not isinstance(schema, dict | bool):
            raise InvalidRequestError("json_schema must be a JSON object", kind)
        # As text: llguidance's JSON parser reads integers beyond 64 bits (as floats), while
        # its conversion of Python objects rejects them.
        try:
            return LLMatcher.grammar_from_json_schema(
                json.dumps(strict_schema(schema)), overrides=JSON_OPTIONS
            )
        except ValueError as exc:
            message = short_error(str(exc))
            raise InvalidRequestError(f"invalid json_schema: {message}", kind) from exc
    try:  # ebnf: GBNF (`root ::= ...`, as llama.cpp and xgrammar take it) or Lark
        return LLMatcher.grammar_from_lark(any_to_lark(source))
    except Exception as exc:  # the GBNF converter raises plain exceptions on syntax errors
        raise InvalidRequestError(f"invalid ebnf: {short_error(str(exc))}", kind) from exc


SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_DATA = ("enum", "const", "default", "examples")  # values, not subschemas


def strict_schema(schema: Any) -> Any:
    """A copy of `schema` where every object with `properties` and no `additionalProperties`
    (or `patternProperties`) admits only the listed properties."""
    if isinstance(schema, list):
        return [strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict: dict[str, Any] = {}
    for key, value in schema.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            strict[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key in SCHEMA_DATA:
            strict[key] = value
        else:
            strict[key] = strict_schema(value)
    if (
        isinstance(strict.get("properties"), dict)
        and "additionalProperties" not in strict
        and "patternProperties" not in strict
    ):
        strict["additionalProperties"] = False
    return strict
