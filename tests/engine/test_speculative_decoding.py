"""N-gram speculative decoding changes no greedy output and no cached token.

Every test runs the same requests on the session engine (float32) without speculation and with
it, and compares token for token; speculation is switched on for the session engine's scheduler
between steps (`speculating`), so the model loads once. A recording speculator keeps what each
verify step drafted, accepted and appended, so the tests can show that drafts were accepted and
that a finish landed inside an accepted run.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from radixgen.runtime.scheduler.speculative import Speculator
from radixgen.server.metrics import ServerMetrics
from tests.helpers import assert_idle_invariant

PASSAGE = (
    "The committee met on Tuesday to review the budget for the new library. Members agreed "
    "that the reading room needs new lighting, that the roof must be repaired before winter, "
    "and that the children's section should be moved to the ground floor. The treasurer "
    "reported that donations had risen by twelve percent since last spring."
)
GREEDY = {"temperature": 0, "max_new_tokens": 48}


@dataclass
class Step:
    generated: int  # output tokens before the step
    draft: list[int]
    accepted: list[int]  # what acceptance returned: accepted drafts + one target token
    appended: int  # what was appended (fewer when the request finished inside the run)


class RecordingSpeculator(Speculator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps: dict[str, list[Step]] = {}
        self._last: list[int] = []

    def accept(self, logits, req, draft):
        self._last = super().accept(logits, req, draft)
        return self._last

    def verify(self, req, logits, draft, outputs, cache):
        generated = len(req.output_ids)
        appended = super().verify(req, logits, draft, outputs, cache)
        step = Step(generated, list(draft), self._last, appended)
        self.steps.setdefault(req.label, []).append(step)
        return appended


def _set_speculator(engine, speculator) -> None:
    scheduler = engine.scheduler
    scheduler.call(lambda: setattr(scheduler, "speculator", speculator)).result()


@contextlib.contextmanager
def speculating(engine, **options):
    """Speculation on for the session engine while the block runs (a recording speculator)."""
    config = engine.config.replace(speculative_algorithm="ngram", **options)
    speculator = RecordingSpeculator(config, engine.eos_ids)
    _set_speculator(engine, speculator)
    try:
        yield speculator
    finally:
        _set_speculator(engine, None)


def cached_sequences(engine) -> list[tuple[int, ...]]:
    """Every root-to-leaf token sequence the radix tree holds."""

    def walk():
        out, stack = [], [(engine.scheduler.cache.tree.root, ())]
        while stack:
            node, prefix = stack.pop()
            path = prefix + tuple(node.key)
            if not node.children and path:
                out.append(path)
            stack.extend((child, path) for child in node.children.values())
        return sorted(out)

    return engine.scheduler.call(walk).result()


def run_both(engine, prompts, params, tune=(), **kwargs):
    """(plain outputs, plain tree, speculative outputs, speculative tree, speculator), each
    run on a flushed cache."""
    assert engine.flush_cache()
    plain = engine.generate(prompts, params, **kwargs)
    plain_tree = cached_sequences(engine)
    assert engine.flush_cache()
    with speculating(engine, tune=tune) as speculator:
        spec = engine.generate(prompts, params, **kwargs)
    spec_tree = cached_sequences(engine)
    assert_idle_invariant(engine)
    return plain, plain_tree, spec, spec_tree, speculator


def same_output(a: dict, b: dict) -> None:
    assert a["output_ids"] == b["output_ids"]
    assert a["text"] == b["text"]
    assert a["meta_info"]["finish_reason"] == b["meta_info"]["finish_reason"]


@pytest.fixture(scope="module")
def chat(engine):
    return lambda text: engine.apply_chat_template([{"role": "user", "content": text}])


@pytest.fixture(scope="module")
def copy_prompt(chat):
    return chat("Repeat the following passage exactly.\n\n" + PASSAGE)


def test_copy_heavy_prompt_accepts_drafts_and_changes_nothing(engine, copy_prompt):
    plain, plain_tree, spec, spec_tree, speculator = run_both(engine, copy_prompt, GREEDY)
    same_output(plain, spec)
    meta = spec["meta_info"]
    assert meta["spec_accepted_tokens"] > 10, meta
    assert meta["spec_verify_ct"] < meta["completion_tokens"] - 10  # fewer steps than tokens
    assert meta["spec_draft_tokens"] >= meta["spec_accepted_tokens"]
    assert "spec_verify_ct" not in plain["meta_info"]
    assert spec_tree == plain_tree  # no rejected draft was cached, nothing accepted is missing
    steps = next(iter(speculator.steps.values()))
    assert sum(len(s.accepted) - 1 for s in steps) == meta["spec_accepted_tokens"]
    stats = engine.stats()
    assert stats["spec_accepted_tokens"] >= meta["spec_accepted_tokens"] > 0


# draft whatever the acceptance so far (the session engine computes in float32)
ALWAYS_LONGEST = ("speculative_draft_cost_float32=0",)
STORY = "Once upon a time, in a kingdom by the sea,"


def test_prompt_where_drafts_mostly_fail_changes_nothing(engine):
    plain, plain_tree, spec, spec_tree, _ = run_both(engine, STORY, GREEDY, tune=ALWAYS_LONGEST)
    same_output(plain, spec)
    meta = spec["meta_info"]
    assert meta["spec_draft_tokens"] > 20
    assert meta["spec_accepted_tokens"] < meta["spec_draft_tokens"] / 2, meta
    assert spec_tree == plain_tree


def test_drafts_that_mostly_fail_are_cut_short_and_copying_still_drafts(engine, copy_prompt):
    """A request drafts by its acceptance so far: where drafts fail and cost what they cost in
    bfloat16 (0.4 of a step each; float32's are nearly free), it verifies far fewer of them;
    where it copies it still drafts long runs."""
    costly = ("speculative_draft_cost_float32=0.4",)
    plain, _, spec, _, _ = run_both(engine, STORY, GREEDY, tune=costly)
    same_output(plain, spec)
    _, _, longest, _, _ = run_both(engine, STORY, GREEDY, tune=ALWAYS_LONGEST)
    drafted, rejected = spec["meta_info"], longest["meta_info"]
    assert drafted["spec_draft_tokens"] < rejected["spec_draft_tokens"] / 2, (drafted, rejected)
    plain, _, copy, _, speculator = run_both(engine, copy_prompt, GREEDY, tune=costly)
    same_output(plain, copy)
    steps = next(iter(speculator.steps.values()))
    assert max(len(s.draft) for s in steps) == engine.config.num_draft_tokens()
    assert copy["meta_info"]["spec_accepted_tokens"] > 10


@pytest.fixture(scope="module")
def long_runs(engine, copy_prompt):
    """Where the copy prompt's speculative run accepted several drafts in one step: the output
    positions (generated before the step, tokens appended)."""
    assert engine.flush_cache()
    with speculating(engine) as speculator:
        out = engine.generate(copy_prompt, GREEDY)
    steps = next(iter(speculator.steps.values()))
    runs = [(s.generated, s.appended) for s in steps if s.appended >= 3]
    assert runs, steps
    return out, runs


def test_max_new_tokens_inside_an_accepted_run(engine, copy_prompt, long_runs):
    _, runs = long_runs
    generated, appended = runs[len(runs) // 2]
    limit = generated + appended - 1  # the run would go one token past the limit
    params = {**GREEDY, "max_new_tokens": limit}
    plain, plain_tree, spec, spec_tree, speculator = run_both(engine, copy_prompt, params)
    same_output(plain, spec)
    assert spec["meta_info"]["completion_tokens"] == limit
    # Drafts stop one short of the limit, so the last run ends exactly on it.
    last = next(iter(speculator.steps.values()))[-1]
    assert last.generated + last.appended == limit
    assert len(last.draft) == limit - last.generated - 1 < engine.config.num_draft_tokens()
    assert spec_tree == plain_tree


def test_stop_string_inside_an_accepted_run(engine, tokenizer, copy_prompt, long_runs):
    out, runs = long_runs
    ids = out["output_ids"]
    for generated, _ in runs:
        # the text of the run's second token, stopping there: the run's later tokens must go
        stop = tokenizer.decode(ids[: generated + 2])[len(tokenizer.decode(ids[: generated + 1])) :]
        if len(stop.strip()) >= 3 and stop not in tokenizer.decode(ids[: generated + 1]):
            break
    else:
        pytest.skip("no accepted run has a distinctive second token")
    params = {**GREEDY, "stop": [stop]}
    plain, plain_tree, spec, spec_tree, speculator = run_both(engine, copy_prompt, params)
    same_output(plain, spec)
    assert spec["meta_info"]["finish_reason"] == {"type": "stop", "matched": stop}
    last = next(iter(speculator.steps.values()))[-1]
    assert last.appended < len(last.accepted)
    assert spec_tree == plain_tree


def test_batch_with_different_draft_lengths_and_non_speculating_requests(engine, chat, copy_prompt):
    prompts = [
        copy_prompt,
        "Once upon a time, in a kingdom by the sea,",
        "Shopping list:\n1. apples\n2. bananas\n3.",
        chat("List the days of the week, then list them again in reverse order."),
        "def fibonacci(n):\n",
    ]
    params = [
        GREEDY,
        GREEDY,
        {**GREEDY, "max_new_tokens": 20},
        {**GREEDY, "min_new_tokens": 30, "logit_bias": {"13": 1.5}},
        {**GREEDY, "frequency_penalty": 0.5},  # does not speculate
    ]
    wide = ("speculative_max_step_tokens=64",)  # every request drafts up to k in each step
    plain, plain_tree, spec, spec_tree, speculator = run_both(engine, prompts, params, tune=wide)
    for a, b in zip(plain, spec, strict=True):
        same_output(a, b)
    assert "spec_verify_ct" not in spec[4]["meta_info"]
    assert all(spec[i]["meta_info"]["spec_verify_ct"] > 0 for i in range(4))
    lengths = {len(s.draft) for steps in speculator.steps.values() for s in steps}
    assert len(lengths) >= 2, lengths  # full drafts and shorter ones in the same steps
    assert spec_tree == plain_tree


def test_logprob_requests_decode_as_usual_beside_speculating_ones(engine, copy_prompt):
    def both() -> tuple[dict, dict]:
        with ThreadPoolExecutor(2) as pool:  # submitted together: they share decode steps
            speculating_one = pool.submit(engine.generate, copy_prompt, GREEDY)
            with_logprobs = pool.submit(engine.generate, copy_prompt, GREEDY, return_logprob=True)
            return speculating_one.result(), with_logprobs.result()

    _, plain = both()
    with speculating(engine):
        other, spec = both()
    same_output(plain, spec)
    lps = [lp for lp, _, _ in spec["meta_info"]["output_token_logprobs"]]
    plain_lps = [lp for lp, _, _ in plain["meta_info"]["output_token_logprobs"]]
    assert lps == pytest.approx(plain_lps, abs=1e-4)
    assert "spec_verify_ct" not in spec["meta_info"]
    assert other["meta_info"]["spec_accepted_tokens"] > 0


def test_streamed_chunks_add_up_to_the_final_output(engine, copy_prompt):
    plain = engine.generate(copy_prompt, GREEDY)
    with speculating(engine):
        chunks = list(engine.generate(copy_prompt, GREEDY, stream=True))
    texts = [c["text"] for c in chunks]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))  # append-only
    same_output(plain, chunks[-1])
    assert len(chunks) < len(plain["output_ids"])  # several tokens per step


def test_sampling_with_a_seed_is_reproducible_and_runs_beside_greedy(engine, copy_prompt):
    sampled = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 32, "sampling_seed": 7}
    with speculating(engine):
        first = engine.generate([copy_prompt, copy_prompt], [sampled, GREEDY])
        second = engine.generate(copy_prompt, sampled)
    assert first[0]["output_ids"] == second["output_ids"]
    assert first[0]["meta_info"]["spec_verify_ct"] > 0
    same_output(first[1], engine.generate(copy_prompt, GREEDY))
    assert_idle_invariant(engine)


def test_metrics_report_speculation_totals(engine, copy_prompt):
    with speculating(engine):
        engine.generate(copy_prompt, {**GREEDY, "max_new_tokens": 16})
    stats = engine.stats()
    text = ServerMetrics(lambda: stats).render().decode()
    drafted = f"radixgen_spec_draft_tokens_total {float(stats['spec_draft_tokens'])}"
    accepted = f"radixgen_spec_accepted_tokens_total {float(stats['spec_accepted_tokens'])}"
    assert drafted in text and accepted in text
    assert stats["spec_draft_tokens"] > 0 and stats["spec_verify_steps"] > 0


class InjectedFault(RuntimeError):
    pass


@pytest.mark.parametrize("stage", ["verify pass", "acceptance"])
def test_a_failing_verify_pass_or_acceptance_ends_only_its_request(
    engine, copy_prompt, monkeypatch, stage
):
    prompts = [copy_prompt, "Shopping list:\n1. apples\n2. bananas\n3.", copy_prompt]
    labels = ["good-0", "good-1", "bad"]
    expected = engine.generate(prompts[:2], GREEDY)
    scheduler = engine.scheduler

    def is_bad(req) -> bool:
        return req.label == "bad" and len(req.output_ids) >= 4  # after a few clean steps

    with speculating(engine) as speculator:
        if stage == "acceptance":
            accept = speculator.accept

            def failing_accept(logits, req, draft):
                if is_bad(req):
                    raise InjectedFault("injected acceptance fault")
                return accept(logits, req, draft)

            monkeypatch.setattr(speculator, "accept", failing_accept)
        else:
            forward = scheduler.runner.forward

            def failing_forward(batch):
                bad = [r.req_pool_row for r in scheduler.decode.running if is_bad(r)]
                if bad and bad[0] in batch.req_pool_indices.tolist() and batch.num_tokens > 1:
                    raise InjectedFault("injected verify-pass fault")
                return forward(batch)

            monkeypatch.setattr(scheduler.runner, "forward", failing_forward)
        outs = engine.generate(prompts, GREEDY, rid=labels)
    bad = outs[2]["meta_info"]["finish_reason"]
    assert bad["type"] == "abort" and bad["status_code"] == 500, bad
    for out, alone in zip(outs[:2], expected, strict=True):
        same_output(out, alone)
    assert outs[0]["meta_info"]["spec_accepted_tokens"] > 0
    assert_idle_invariant(engine)  # the failed request's drafted slots went back too
