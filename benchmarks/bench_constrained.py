"""JSON decoding benchmark (the SGLang paper's constrained-extraction workload, in miniature).

Each request gives the model a short encyclopedia-style paragraph about a (seeded, made-up) city
and asks for its facts as JSON under a 9-field schema: keys, punctuation, enum values and closing
brackets are forced by the schema, names and numbers are the model's. Systems, same prompts,
greedy, one run:

* unconstrained      the same prompts with no constraint (up to the same token budget)
* token-by-token     schema-constrained, every forced token decoded one step at a time
                     (`disable_jump_forward=True`)
* jump-forward       schema-constrained, forced tokens appended and computed in one extend step
* llama.cpp          llama-cpp-python's own JSON-schema grammar (GBNF), same GGUF, 2 threads
                     (batch 1 only: the binding has no batching)

Two regimes per system: batch 1 (requests one after another: latency) and all requests at once
(throughput). Reported: output tokens/s, requests/s, p50/p99 latency, schema validity, and for
radixgen the cost of the grammar mask per decode step (engine counters: time in mask fill+apply
over all decode/extend steps, against the mean step time).

    python benchmarks/bench_constrained.py [--requests 16] [--quick] [--skip-llamacpp]
                                           [--json out.json] [--no-record]

The report goes to stdout and, unless `--no-record`, with the machine's facts to a record
docs/benchmarks/constrained-<date>[-N].md (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import jsonschema
import record

from radixgen import Engine

SCHEMA = {
    "type": "object",
    "properties": {
        "city_name": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
        "founded_year": {"type": "integer", "minimum": 0, "maximum": 2100},
        "mayor": {"type": "string", "maxLength": 40},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "climate": {"enum": ["oceanic", "continental", "mediterranean", "tropical", "arid"]},
        "is_capital": {"type": "boolean"},
        "twin_cities": {
            "type": "array",
            "items": {"type": "string", "maxLength": 30},
            "maxItems": 2,
        },
    },
    "required": [
        "city_name",
        "country",
        "population",
        "founded_year",
        "mayor",
        "landmarks",
        "climate",
        "is_capital",
        "twin_cities",
    ],
}
SYLLABLES = ["ka", "lo", "mer", "ston", "vel", "ri", "an", "dor", "bu", "sa", "tel", "min"]
COUNTRIES = ["France", "Chile", "Norway", "Kenya", "Japan", "Canada", "Peru", "Italy"]
FIRST = ["Anna", "Marco", "Sofia", "Lukas", "Amara", "Kenji", "Elena", "Tomas"]
LAST = ["Okafor", "Lindqvist", "Moreau", "Tanaka", "Rossi", "Silva", "Novak", "Haddad"]
SIGHTS = [
    "the Old Bridge",
    "St. Mary's Cathedral",
    "the Harbour Tower",
    "the City Museum",
    "Central Park",
    "the Royal Theatre",
    "the Botanical Garden",
    "the Clock Square",
]
CLIMATES = SCHEMA["properties"]["climate"]["enum"]
BUDGET = 160  # max_new_tokens; the schema's outputs fit in it


def city_name(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def paragraph(rng: random.Random) -> str:
    name, country = city_name(rng), rng.choice(COUNTRIES)
    capital = rng.random() < 0.3
    sights = rng.sample(SIGHTS, 3)
    twins = [city_name(rng), city_name(rng)]
    return (
        f"{name} is a {'capital ' if capital else ''}city in {country}. It was founded in "
        f"{rng.randint(900, 1900)} and today has a population of {rng.randint(20, 3000) * 1000}. "
        f"The current mayor is {rng.choice(FIRST)} {rng.choice(LAST)}. Visitors come for "
        f"{sights[0]}, {sights[1]} and {sights[2]}. The climate is {rng.choice(CLIMATES)}. "
        f"{name} is twinned with {twins[0]} and {twins[1]}."
    )


def build_prompts(engine: Engine, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [
        engine.apply_chat_template(
            [
                {
                    "role": "user",
                    "content": f"Extract the facts about the city as JSON.\n\n{paragraph(rng)}",
                }
            ]
        )
        for _ in range(n)
    ]


@dataclass
class Result:
    system: str
    regime: str  # "batch 1" or "all at once"
    requests: int
    seconds: float
    output_tokens: int
    valid: int | None  # outputs that validate against the schema (None: unconstrained)
    latencies: list[float]
    mask_ms_per_step: float | None = None
    step_ms: float | None = None
    forced_share: float | None = None  # share of output tokens appended by jump-forward

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False


def run_engine(system: str, engine: Engine, prompts: list[str], constrained: bool) -> list[Result]:
    params: dict[str, Any] = {"temperature": 0, "max_new_tokens": BUDGET}
    if constrained:
        params["json_schema"] = json.dumps(SCHEMA)
    engine.generate(prompts[0], params)  # warm-up (and the grammar compile cache)
    results = []
    for regime in ("batch 1", "all at once"):
        engine.flush_cache()
        before = engine.stats()
        started = time.perf_counter()
        if regime == "batch 1":
            outputs, latencies = [], []
            for prompt in prompts:
                t0 = time.perf_counter()
                outputs.append(engine.generate(prompt, params))
                latencies.append(time.perf_counter() - t0)
        else:
            outputs = engine.generate(prompts, params)
            latencies = [o["meta_info"]["e2e_latency"] for o in outputs]
        seconds = time.perf_counter() - started
        after = engine.stats()
        steps = after["decode_steps"] - before["decode_steps"]
        tokens = sum(o["meta_info"]["completion_tokens"] for o in outputs)
        forced = after["forced_tokens"] - before["forced_tokens"]
        mask = after["grammar_mask_seconds"] - before["grammar_mask_seconds"]
        step = after["decode_seconds"] - before["decode_seconds"]
        results.append(
            Result(
                system,
                regime,
                len(prompts),
                seconds,
                tokens,
                sum(_valid(o["text"]) for o in outputs) if constrained else None,
                latencies,
                mask_ms_per_step=1000 * mask / steps if constrained and steps else None,
                step_ms=1000 * step / steps if steps else None,
                forced_share=forced / tokens if constrained else None,
            )
        )
        log(f"{system:>15} {regime:>11}: {results[-1].tokens_per_s:.1f} tok/s")
    return results


def run_llamacpp(prompts: list[str]) -> list[Result]:
    import llama_cpp

    from radixgen.runtime.model.loader import default_model_path

    llm = llama_cpp.Llama(
        model_path=str(default_model_path()), n_threads=2, n_ctx=4096, verbose=False
    )
    grammar = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    llm.create_completion(prompts[0], max_tokens=4, temperature=0)  # warm-up
    latencies, tokens, valid = [], 0, 0
    started = time.perf_counter()
    for prompt in prompts:
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=BUDGET, temperature=0, grammar=grammar)
        latencies.append(time.perf_counter() - t0)
        tokens += out["usage"]["completion_tokens"]
        valid += _valid(out["choices"][0]["text"])
    seconds = time.perf_counter() - started
    log(f"{'llama.cpp':>15} {'batch 1':>11}: {tokens / seconds:.1f} tok/s")
    return [Result("llama.cpp (GBNF)", "batch 1", len(prompts), seconds, tokens, valid, latencies)]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def report(results: list[Result]) -> str:
    lines = [
        "| system | regime | tok/s | req/s | p50 latency s | p99 latency s | valid | "
        "forced tokens | mask ms/step | step ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        valid = "-" if r.valid is None else f"{r.valid}/{r.requests}"
        lines.append(
            f"| {r.system} | {r.regime} | {r.tokens_per_s:.1f} | {r.requests_per_s:.2f} | "
            f"{r.percentile(0.5):.2f} | {r.percentile(0.99):.2f} | {valid} | "
            f"{_opt(r.forced_share and 100 * r.forced_share, '{:.0f}%')} | "
            f"{_opt(r.mask_ms_per_step, '{:.2f}')} | {_opt(r.step_ms, '{:.1f}')} |"
        )
    by = {(r.system, r.regime): r for r in results}
    lines.append("")
    for regime in ("batch 1", "all at once"):
        jf, tbt = by.get(("jump-forward", regime)), by.get(("token-by-token", regime))
        free = by.get(("unconstrained", regime))
        if jf and tbt:
            lines.append(
                f"- {regime}: jump-forward / token-by-token = "
                f"{jf.tokens_per_s / tbt.tokens_per_s:.2f}x tok/s, "
                f"{tbt.percentile(0.5) / jf.percentile(0.5):.2f}x lower p50 latency; "
                f"mask = {100 * jf.mask_ms_per_step / jf.step_ms:.1f}% of a step"
            )
        if jf and free:
            lines.append(
                f"- {regime}: jump-forward / unconstrained = "
                f"{jf.tokens_per_s / free.tokens_per_s:.2f}x tok/s"
            )
    lc, jf1 = by.get(("llama.cpp (GBNF)", "batch 1")), by.get(("jump-forward", "batch 1"))
    if lc and jf1:
        lines.append(
            "- batch 1: jump-forward / llama.cpp grammar = "
            f"{jf1.tokens_per_s / lc.tokens_per_s:.2f}x tok/s, "
            f"{lc.percentile(0.5) / jf1.percentile(0.5):.2f}x lower p50 latency"
        )
    return "\n".join(lines)


def run_llamacpp_in_fresh_process(prompts: list[str]) -> list[Result]:
    """`run_llamacpp` in a new interpreter. llama.cpp links the same OpenMP runtime that torch
    loaded (libgomp.so.1); in this process the engines' earlier worker pools slowed it to
    ~40 tok/s, against ~66 tok/s alone."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(run_llamacpp, prompts).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--quick", action="store_true", help="4 requests: a smoke run")
    parser.add_argument("--skip-llamacpp", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    record.add_record_args(parser)
    args = parser.parse_args(argv)
    command = record.command_line("python benchmarks/bench_constrained.py", argv)
    n = 4 if args.quick else args.requests
    results: list[Result] = []
    for system, options, constrained in (
        ("unconstrained", {}, False),
        ("token-by-token", {"disable_jump_forward": True}, True),
        ("jump-forward", {}, True),
    ):
        with Engine(model="smollm2", dtype=args.dtype, **options) as engine:
            prompts = build_prompts(engine, n)
            results += run_engine(system, engine, prompts, constrained)
    if not args.skip_llamacpp:
        try:
            results += run_llamacpp_in_fresh_process(prompts)
        except ImportError:
            log("llama-cpp-python is not installed (pip install -e .[peers]); skipped")
    text = report(results)
    print(text)
    settings = {"Model": "smollm2", "dtype": record.dtype_label(args.dtype), "requests": n}
    title = "JSON decoding benchmark" + (", --quick smoke run" * args.quick)
    record.save(args, "constrained", title, text, command, settings)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in results], f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
