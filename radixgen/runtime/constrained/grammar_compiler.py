"""`GrammarCompiler`: sampling params' `regex` / `json_schema` / `ebnf` / `structural_tag` -> a
ready `Grammar`.

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
- `structural_tag` (SGLang's `{"type": "structural_tag", "structures": [{"begin", "schema",
  "end"}], "triggers": [...]}`): free text until a trigger appears; then the rest of the begin
  string of a structure that starts with that trigger, JSON for its schema, its end string, and
  free text again (any number of times). Translated into a Lark grammar with lazy trigger
  lexemes (see `structural_tag_grammar`).
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
    if kind == "structural_tag":
        try:
            return LLMatcher.grammar_from_lark(structural_tag_grammar(source))
        except RecursionError:  # json.loads or strict_schema on absurdly deep nesting
            raise InvalidRequestError("structural_tag is nested too deeply", kind) from None
    try:  # ebnf: GBNF (`root ::= ...`, as llama.cpp and xgrammar take it) or Lark
        return LLMatcher.grammar_from_lark(any_to_lark(source))
    except Exception as exc:  # the GBNF converter raises plain exceptions on syntax errors
        raise InvalidRequestError(f"invalid ebnf: {short_error(str(exc))}", kind) from exc


def structural_tag_grammar(source: str) -> str:
    """SGLang's structural tag as an llguidance Lark grammar:

        start: (tag_0 | tag_1 | ...)* free          free text, tagged segments, free text
        free: FREE_TEXT
        FREE_TEXT: /(.|\\n)*/
        tag_i_trigger[lazy]: FREE_TEXT "<trigger>"  text up to the first trigger occurrence
        tag_i: tag_i_trigger "<rest of begin>" %json {schema} "<end>"

    A lazy lexeme ends at its first match, so once a trigger appears in free text the output
    must go on with the rest of a matching structure's begin. Each structure is paired with
    the shortest trigger its begin starts with: that trigger is seen first. Schemas get the
    same strict, compact JSON as `json_schema`. Not expressible here: triggers are matched as
    text, so a trigger that is a special token (`<|python_tag|>`) only fires when the model
    spells it out in ordinary tokens; xgrammar's newer `{"type": "structural_tag", "format":
    ...}` form is rejected."""
    kind = "structural_tag"
    try:
        spec = json.loads(source)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(f"structural_tag is not valid JSON: {exc.msg}", kind) from exc
    if not isinstance(spec, dict):
        raise InvalidRequestError("structural_tag must be a JSON object", kind)
    if spec.get("type", kind) != kind or "structures" not in spec:
        raise InvalidRequestError(
            'structural_tag must be {"type": "structural_tag", "structures": [...], '
            '"triggers": [...]}',
            kind,
        )
    structures, triggers = spec.get("structures"), spec.get("triggers")
    if not isinstance(structures, list) or not structures:
        raise InvalidRequestError("structural_tag structures must be a non-empty list", kind)
    if not isinstance(triggers, list) or not all(isinstance(t, str) and t for t in triggers):
        raise InvalidRequestError("structural_tag triggers must be non-empty strings", kind)
    lines = ["%llguidance {}", "free: FREE_TEXT", "FREE_TEXT: /(.|\\n)*/"]
    used: set[str] = set()
    for i, structure in enumerate(structures):
        begin, schema, end = _structure(structure, i)
        trigger = min((t for t in triggers if begin.startswith(t)), key=len, default=None)
        if trigger is None:
            raise InvalidRequestError(
                f"structural_tag structures[{i}].begin {begin!r} starts with no trigger", kind
            )
        used.add(trigger)
        schema = {**strict_schema(schema), "x-guidance": {**JSON_OPTIONS}}
        body = [_lark_string(begin[len(trigger) :]), f"%json {json.dumps(schema)}"]
        body.append(_lark_string(end))
        lines.append(f"tag_{i}_trigger[lazy]: FREE_TEXT {_lark_string(trigger)}")
        lines.append(f"tag_{i}: tag_{i}_trigger {' '.join(b for b in body if b)}")
    unused = [t for t in triggers if t not in used]
    if unused:
        raise InvalidRequestError(f"structural_tag trigger {unused[0]!r} begins no structure", kind)
    tags = " | ".join(f"tag_{i}" for i in range(len(structures)))
    lines.insert(1, f"start: ({tags})* free")
    return "\n".join(lines) + "\n"


def _structure(structure: Any, i: int) -> tuple[str, dict[str, Any], str]:
    where = f"structural_tag structures[{i}]"
    if not isinstance(structure, dict):
        raise InvalidRequestError(f"{where} must be an object", "structural_tag")
    begin, schema, end = structure.get("begin"), structure.get("schema"), structure.get("end")
    if not isinstance(begin, str) or not begin or not isinstance(end, str):
        raise InvalidRequestError(
            f"{where} needs a non-empty string begin and a string end", "structural_tag"
        )
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{where}.schema must be a JSON schema object", "structural_tag")
    return begin, schema, end


def _lark_string(text: str) -> str:
    """A Lark string literal for `text` ("" for the empty string: nothing to match)."""
    return json.dumps(text) if text else ""


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
