"""N-gram speculative decoding: batch-1 greedy decode speed with and without it.

Two workloads, each request run alone (batch 1), greedy:

* extraction   the answer copies from the prompt: "repeat this passage", "list the fields
               of this record" (seeded made-up documents) -- where drafts should be accepted
* chat         plain chat questions whose answers are the model's own text -- where drafts
               mostly fail, to see whether speculation loses

Systems: speculation off, and on with each `--draft-tokens` value. Rounds are paired and
interleaved (every system runs every prompt once per round, the order rotating between rounds);
figures are medians over rounds, the ratio the median of the per-round ratios against "off".
Decode tok/s counts the tokens of decode steps (every output token but the first, which the
prefill samples) over the engine's decode-step time (`decode_seconds`), so prefill is out of
it; end-to-end tok/s is output tokens over wall time. Also printed: drafted and accepted
tokens, tokens a request gained per verify step, and whether every output equals
speculation-off's token for token.

One engine serves every system: speculation is switched on the live scheduler between requests
(a second engine would add a second OpenMP thread pool and slow both).

    python benchmarks/bench_speculative.py [--dtype auto] [--draft-tokens 2,4,6] [--rounds 5]
                                           [--new-tokens 128] [--quick] [--no-record]

The report goes to stdout and, unless `--no-record`, to docs/benchmarks/speculative-<date>.md
(benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record  # noqa: E402

from radixgen import Engine  # noqa: E402
from radixgen.runtime.scheduler.speculative import Speculator  # noqa: E402

SENTENCES = [
    "The committee met on {day} to review the budget for the new {place}.",
    "Members agreed that the {room} needs new lighting before the {season}.",
    "The treasurer reported that donations had risen by {n} percent since last {season}.",
    "A volunteer named {name} offered to repaint the {room} at no cost.",
    "The roof of the {place} must be repaired before the first storms of {season}.",
    "Visitors asked for longer opening hours on {day} evenings.",
    "{name} proposed a reading club for children that would meet every {day}.",
    "The council promised to decide on the {place} extension within {n} weeks.",
]
WORDS = {
    "day": ["Monday", "Tuesday", "Thursday", "Saturday"],
    "place": ["library", "museum", "town hall", "community centre"],
    "room": ["reading room", "main hall", "archive", "children's section"],
    "season": ["winter", "spring", "autumn", "summer"],
    "name": ["Marta Lindqvist", "Kenji Okafor", "Elena Rossi", "Tomas Haddad"],
    "n": ["twelve", "seven", "twenty", "three"],
}
FIELDS = ["Name", "Date of birth", "City", "Occupation", "Employer", "Email", "Phone", "Hobby"]
VALUES = {
    "Name": ["Anna Moreau", "Lukas Silva", "Amara Novak", "Sofia Tanaka"],
    "Date of birth": ["12 March 1987", "3 July 1990", "28 November 1979", "9 January 2001"],
    "City": ["Lyon", "Porto", "Ljubljana", "Osaka"],
    "Occupation": ["civil engineer", "nurse", "graphic designer", "teacher"],
    "Employer": [
        "Northbridge Consulting",
        "St. Anne's Hospital",
        "Atelier Vert",
        "Hillside School",
    ],
    "Email": [
        "anna.moreau@example.com",
        "l.silva@example.org",
        "amara@example.net",
        "st@example.jp",
    ],
    "Phone": ["+33 4 72 10 55 21", "+351 22 418 9032", "+386 1 234 5678", "+81 6 6345 1200"],
    "Hobby": ["rock climbing", "watercolour painting", "chess", "sailing"],
}
CHAT = [
    "Write a short poem about autumn leaves.",
    "Explain how a bicycle works to a ten-year-old.",
    "Give me three tips for learning a new language.",
    "What would you do on a perfect weekend?",
]


def passage(rng: random.Random) -> str:
    picked = rng.sample(SENTENCES, 6)
    return " ".join(s.format(**{k: rng.choice(v) for k, v in WORDS.items()}) for s in picked)


def record_text(rng: random.Random) -> str:
    lines = [f"{f}: {rng.choice(VALUES[f])}" for f in FIELDS]
    prose = passage(rng)
    return f"{prose}\n\nPersonnel file:\n" + "\n".join(lines) + f"\n\n{passage(rng)}"


def workloads(engine: Engine, per_workload: int) -> dict[str, list[str]]:
    rng = random.Random(0)
    chat = lambda text: engine.apply_chat_template([{"role": "user", "content": text}])  # noqa: E731
    extraction = []
    for i in range(per_workload):
        if i % 2 == 0:
            extraction.append(chat(f"Repeat the following passage exactly.\n\n{passage(rng)}"))
        else:
            extraction.append(
                chat(
                    "From the document below, copy every field of the personnel file, one "
                    f"'Field: value' line each, exactly as written.\n\n{record_text(rng)}"
                )
            )
    return {"extraction": extraction, "chat": [chat(q) for q in CHAT[:per_workload]]}


def set_speculation(
    engine: Engine, draft_tokens: int | None, min_n: int, max_n: int, tune: tuple[str, ...] = ()
) -> None:
    """Speculation off (None) or on with `draft_tokens`, on the live scheduler."""
    speculator = None
    if draft_tokens is not None:
        config = engine.config.replace(
            speculative_algorithm="ngram",
            speculative_num_draft_tokens=draft_tokens,
            speculative_ngram_min_match_window_size=min_n,
            speculative_ngram_max_match_window_size=max_n,
            tune=(*engine.config.tune, *tune),
        )
        speculator = Speculator(config, engine.eos_ids)
    scheduler = engine.scheduler
    scheduler.call(lambda: setattr(scheduler, "speculator", speculator)).result()


@dataclass
class Round:
    decode_tokens: int = 0
    decode_seconds: float = 0.0
    tokens: int = 0
    wall: float = 0.0
    drafted: int = 0
    accepted: int = 0
    verify_steps: int = 0  # per request: steps that verified one of its drafts
    outputs: list[list[int]] = field(default_factory=list)

    @property
    def decode_rate(self) -> float:
        return self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0

    @property
    def e2e_rate(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


def run_round(engine: Engine, prompts: list[str], new_tokens: int, batch: int = 1) -> Round:
    """The prompts in groups of `batch` submitted together (batch 1: one after another)."""
    params = {"temperature": 0, "max_new_tokens": new_tokens}
    result = Round()
    for first in range(0, len(prompts), batch):
        before = engine.stats()
        started = time.perf_counter()
        outs = engine.generate(prompts[first : first + batch], params)
        result.wall += time.perf_counter() - started
        after = engine.stats()
        for out in outs:
            result.tokens += out["meta_info"]["completion_tokens"]
            result.decode_tokens += out["meta_info"]["completion_tokens"] - 1
            result.outputs.append(out["output_ids"])
            result.verify_steps += out["meta_info"].get("spec_verify_ct", 0)
        result.decode_seconds += after["decode_seconds"] - before["decode_seconds"]
        result.drafted += after["spec_draft_tokens"] - before["spec_draft_tokens"]
        result.accepted += after["spec_accepted_tokens"] - before["spec_accepted_tokens"]
    return result


def system_name(draft_tokens: int | None) -> str:
    return "off" if draft_tokens is None else f"ngram k={draft_tokens}"


def measure(
    engine: Engine,
    prompts: list[str],
    systems: list[int | None],
    rounds: int,
    new_tokens: int,
    windows: tuple[int, int],
    batch: int,
    tune: tuple[str, ...] = (),
) -> dict[int | None, list[Round]]:
    set_speculation(engine, None, *windows)
    run_round(engine, prompts, 2)  # warm-up: every prompt cached, so no round pays its prefill
    results: dict[int | None, list[Round]] = {s: [] for s in systems}
    for r in range(rounds):
        shift = r % len(systems)
        for system in systems[shift:] + systems[:shift]:
            set_speculation(engine, system, *windows, tune)
            results[system].append(run_round(engine, prompts, new_tokens, batch))
            log(f"round {r + 1}: {system_name(system):>10} {results[system][-1].decode_rate:6.1f}")
    set_speculation(engine, None, *windows)
    return results


def report(name: str, results: dict[int | None, list[Round]]) -> str:
    base = results[None]
    lines = [
        f"### {name}",
        "",
        "| system | decode tok/s | ratio | e2e tok/s | e2e ratio | accepted / drafted "
        "| tokens / verify step | same outputs as off |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for system, rounds in results.items():
        decode = statistics.median(r.decode_rate for r in rounds)
        e2e = statistics.median(r.e2e_rate for r in rounds)
        ratio = statistics.median(
            r.decode_rate / b.decode_rate for r, b in zip(rounds, base, strict=True)
        )
        e2e_ratio = statistics.median(
            r.e2e_rate / b.e2e_rate for r, b in zip(rounds, base, strict=True)
        )
        drafted = sum(r.drafted for r in rounds)
        accepted = sum(r.accepted for r in rounds)
        steps = sum(r.verify_steps for r in rounds)
        same = all(r.outputs == b.outputs for r, b in zip(rounds, base, strict=True))
        rate = f"{accepted}/{drafted} ({accepted / drafted:.0%})" if drafted else "-"
        per_step = f"{(accepted + steps) / steps:.2f}" if steps else "-"
        lines.append(
            f"| {system_name(system)} | {decode:.1f} | {ratio:.2f}x | {e2e:.1f} | "
            f"{e2e_ratio:.2f}x | {rate} | {per_step} | {'yes' if same else 'NO'} |"
        )
    return "\n".join(lines)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--draft-tokens", default="3", help="comma-separated draft lengths to compare (k)"
    )
    parser.add_argument("--min-window", type=int, default=None)
    parser.add_argument("--max-window", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per workload")
    parser.add_argument(
        "--batch", type=int, default=1, help="requests submitted together (default 1: one by one)"
    )
    parser.add_argument("--num-threads", type=int, default=None)
    parser.add_argument(
        "--max-step-tokens",
        type=int,
        default=None,
        help="Tuning.speculative_max_step_tokens for the runs with speculation (default: its own)",
    )
    parser.add_argument("--quick", action="store_true", help="few tokens, one round: a smoke run")
    record.add_record_args(parser)
    args = parser.parse_args(argv)
    command = record.command_line("python benchmarks/bench_speculative.py", argv)
    if args.quick:
        args.rounds, args.new_tokens, args.prompts = 1, 24, 2
    systems: list[int | None] = [None, *(int(k) for k in args.draft_tokens.split(","))]
    tune: tuple[str, ...] = ()
    if args.max_step_tokens is not None:
        tune = (f"speculative_max_step_tokens={args.max_step_tokens}",)
    with Engine(model="smollm2", dtype=args.dtype, num_threads=args.num_threads) as engine:
        max_step_tokens = engine.config.replace(tune=tune).tuning.speculative_max_step_tokens
        windows = (
            args.min_window or engine.config.speculative_ngram_min_match_window_size,
            args.max_window or engine.config.speculative_ngram_max_match_window_size,
        )
        sections = []
        for name, prompts in workloads(engine, args.prompts).items():
            log(f"{name}: {len(prompts)} prompts")
            results = measure(
                engine, prompts, systems, args.rounds, args.new_tokens, windows, args.batch, tune
            )
            sections.append(report(name, results))
        dtype = str(engine.config.torch_dtype).removeprefix("torch.")
    header = (
        f"batch {args.batch}, greedy, {args.new_tokens} new tokens per request, "
        f"{args.prompts} prompts per workload, {args.rounds} paired rounds (medians); "
        f"dtype {dtype}; n-gram windows {windows[0]}..{windows[1]}; "
        f"at most {max_step_tokens} tokens per verify step; "
        "ratio = against speculation off in the same round"
    )
    text = "\n\n".join([header, *sections])
    print(text)
    title = f"N-gram speculative decoding, batch {args.batch}"
    settings = {
        "Model": "smollm2",
        "dtype": record.dtype_label(args.dtype),
        "rounds": args.rounds,
        "new tokens": args.new_tokens,
        "batch": args.batch,
        "threads": args.num_threads or "all cores",
    }
    record.save(args, "speculative", title, text, command, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
