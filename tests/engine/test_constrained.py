"""Constrained decoding on the real model: every output matches its regex or validates against
its schema, with jump-forward on and off, in batches mixed with unconstrained requests; forced
tokens are canonical; bad constraints fail alone."""

from __future__ import annotations

import json
import random
import re
import threading

import jsonschema
import pytest

from radixgen import Engine, InvalidRequestError
from radixgen.runtime.sampling_params import SamplingParams
from tests.engine.constraint_cases import random_regex, random_schema
from tests.helpers import assert_idle_invariant

NUM_CASES = 8
TEMPERATURES = (0.0, 1.0)
BUDGET = 200  # max_new_tokens; every generated language fits well inside it


@pytest.fixture(scope="module")
def token_by_token_engine():
    """The same engine configuration as the session `engine`, with jump-forward off."""
    eng = Engine(
        model="smollm2",
        dtype="float32",
        kv_cache_tokens=16384,
        chunked_prefill_size=128,
        max_running_requests=48,
        disable_jump_forward=True,
    )
    yield eng
    eng.shutdown()


def engines(engine, token_by_token_engine):
    return {"jump_forward": engine, "token_by_token": token_by_token_engine}


def chat(engine, text: str) -> str:
    return engine.apply_chat_template([{"role": "user", "content": text}])


def mixed_batch(engine, seed: int):
    """Constrained requests (random schemas and regexes, two temperatures) interleaved with
    unconstrained ones; returns prompts, sampling params and each request's check."""
    rng = random.Random(seed)
    prompts, params, checks = [], [], []
    for i in range(NUM_CASES):
        schema = random_schema(rng)
        regex = random_regex(rng)
        for temperature in TEMPERATURES:
            prompts.append(
                chat(engine, f"Reply in JSON following this schema: {json.dumps(schema)}")
            )
            params.append(
                {"json_schema": json.dumps(schema), "temperature": temperature, "seed": i}
            )
            checks.append(("schema", schema))
            prompts.append(chat(engine, f"Write a string matching /{regex}/"))
            params.append({"regex": regex, "temperature": temperature, "seed": i})
            checks.append(("regex", regex))
        prompts.append(f"Story {i}: once upon a time")
        params.append({"temperature": 1.0, "max_new_tokens": 12, "seed": i})
        checks.append(("free", None))
    for p in params:
        p.setdefault("max_new_tokens", BUDGET)
    return prompts, params, checks


@pytest.mark.parametrize("mode", ["jump_forward", "token_by_token"])
def test_outputs_satisfy_their_constraints(engine, token_by_token_engine, mode):
    eng = engines(engine, token_by_token_engine)[mode]
    prompts, params, checks = mixed_batch(eng, seed=1234)
    outputs = eng.generate(prompts, params)
    for out, (kind, constraint) in zip(outputs, checks, strict=True):
        reason = out["meta_info"]["finish_reason"]
        if kind == "free":
            assert reason["type"] == "length" and out["meta_info"]["completion_tokens"] == 12
            continue
        assert reason["type"] == "stop", (constraint, out["text"], reason)
        if kind == "schema":
            jsonschema.validate(json.loads(out["text"]), constraint)
        else:
            assert re.fullmatch(constraint, out["text"]), (constraint, out["text"])
    assert_idle_invariant(eng)


def test_number_and_nested_schema_greedy(engine):
    schema = {
        "type": "object",
        "properties": {
            "price": {"type": "number", "minimum": 0, "maximum": 1000},
            "item": {
                "type": "object",
                "properties": {"sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"}},
                "required": ["sku"],
            },
            "sizes": {"type": "array", "items": {"enum": ["S", "M", "L"]}, "maxItems": 3},
        },
        "required": ["price", "item", "sizes"],
    }
    out = engine.generate(
        chat(engine, "Describe a product as JSON."),
        {"json_schema": json.dumps(schema), "temperature": 0, "max_new_tokens": BUDGET},
    )
    assert out["meta_info"]["finish_reason"]["type"] == "stop"
    jsonschema.validate(json.loads(out["text"]), schema)


def test_jump_forward_tokens_are_canonical(engine, token_by_token_engine):
    """Replaying each greedy output through a fresh grammar: wherever the grammar forces
    tokens, the output holds exactly those tokens, and they are what the tokenizer makes of
    their own text. Jump-forward and token-by-token agree on every forced span."""
    tokenizer = engine.tokenizer
    prompts, params, checks = mixed_batch(engine, seed=99)
    greedy = [
        (prompt, p)
        for prompt, p, (kind, _) in zip(prompts, params, checks, strict=True)
        if kind != "free" and p["temperature"] == 0.0
    ]
    jumped = engine.generate([g[0] for g in greedy], [g[1] for g in greedy])
    stepped = token_by_token_engine.generate([g[0] for g in greedy], [g[1] for g in greedy])
    forced_total = 0
    for (_, p), out, base in zip(greedy, jumped, stepped, strict=True):
        grammar = engine.grammars.compile(SamplingParams.from_dict(p))
        ids = out["output_ids"]
        position = 0
        while position < len(ids):
            forced = grammar.forced_tokens()
            if forced:
                span = ids[position : position + len(forced)]
                assert span == forced[: len(span)]
                text = tokenizer.decode(forced)
                assert tokenizer(text, add_special_tokens=False)["input_ids"] == forced
                forced_total += len(span)
                for token in span:
                    assert grammar.accept(token)
                position += len(span)
                continue
            assert grammar.accept(ids[position]), (p, out["text"])
            position += 1
        # Both runs write the grammar's forced text: the outputs agree up to the model's first
        # free choice that differs, and the forced text of the shorter agreement is common.
        common = _common_prefix(out["text"], base["text"])
        assert common >= _first_free_char(p, out["text"]), (out["text"], base["text"])
    assert forced_total > 0


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _first_free_char(params: dict, text: str) -> int:
    """Where the first text the model chose starts: after a schema's forced `{"key": ` head."""
    if "json_schema" not in params:
        return 0
    match = re.match(r'\{"[^"]*": ', text)
    return match.end() if match else 1


def test_n_samples_each_follow_the_constraint(engine):
    out = engine.generate(
        chat(engine, "Pick a color."),
        {"regex": "(red|green|blue|light blue)", "temperature": 1.0, "n": 6, "seed": 3},
    )
    assert all(o["text"] in {"red", "green", "blue", "light blue"} for o in out)


BAD = [
    ({"regex": "[.*"}, "regex"),
    ({"regex": "(abc"}, "regex"),
    ({"json_schema": "{not json"}, "json_schema"),
    ({"json_schema": json.dumps({"type": "objekt"})}, "json_schema"),
    ({"json_schema": json.dumps({"type": "object", "properties": {"foo": "bar"}})}, "json_schema"),
    ({"ebnf": "root ::= ((("}, "ebnf"),
    ({"ebnf": "start: missing_rule"}, "ebnf"),
    ({"regex": "a", "ebnf": 'root ::= "a"'}, "ebnf"),
]


def test_bad_constraints_fail_alone(engine):
    """Each invalid constraint raises InvalidRequestError naming its field, while a request
    that was already running completes normally."""
    results = {}
    background = threading.Thread(
        target=lambda: results.update(
            out=engine.generate(
                "Once upon a time", {"max_new_tokens": 40, "ignore_eos": True, "temperature": 0}
            )
        )
    )
    background.start()
    for params, field in BAD:
        with pytest.raises(InvalidRequestError) as err:
            engine.generate("Hello", {**params, "max_new_tokens": 8})
        assert err.value.param == field, (params, err.value)
    background.join(timeout=120)
    assert results["out"]["meta_info"]["finish_reason"]["type"] == "length"
    assert results["out"]["meta_info"]["completion_tokens"] == 40
    assert_idle_invariant(engine)


def test_grammar_failure_mid_generation_aborts_only_that_request(engine):
    """A token the grammar rejects (a broken mask would produce one) ends that request with a
    'grammar error' abort instead of corrupting its output."""
    from radixgen.runtime.detokenizer import IncrementalDetokenizer
    from radixgen.runtime.request import FinishKind, LogprobOptions, Req
    from radixgen.runtime.scheduler.output import OutputProcessor

    params = SamplingParams.from_dict({"regex": r"\d+"})
    req = Req(
        "r",
        [1, 2, 3],
        params,
        LogprobOptions(),
        IncrementalDetokenizer(engine.tokenizer, [1, 2, 3], [], True, False),
        grammar=engine.grammars.compile(params),
    )
    outputs = OutputProcessor(engine.tokenizer, engine.eos_ids)
    digit, letter = (engine.tokenizer.convert_tokens_to_ids(t) for t in ("7", "a"))
    outputs.append_token(req, digit, None, None)
    assert not req.is_finished and req.output_ids == [digit]
    outputs.append_token(req, letter, None, None)
    assert req.finish_reason.kind is FinishKind.ABORT
    assert req.finish_reason.message.startswith("grammar error")
    assert req.output_ids == [digit]


def test_schema_numbers_beyond_64_bits_are_read_not_a_server_error(engine):
    """A schema may hold any JSON number (the fuzzer sent -9223372036854775809): it compiles."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "x-big": -(2**63) - 1}
    out = engine.generate(
        "A JSON object:", {"json_schema": json.dumps(schema), "max_new_tokens": 12}
    )
    assert out["text"].startswith("{")
