"""No request can hurt another inside the engine: when one request's own stage fails for real
(its output sink raises, or its grammar raises while masking, accepting a token or forcing
text), that request alone ends with an internal error naming its own id, and the requests
batched with it produce exactly what they produce alone. The KV pool is whole afterwards.

The failing requests are real `Req`s built by `Engine.make_requests`; the only thing swapped in
is the caller-supplied part that fails: a sink, or the grammar object of a constrained request
(wrapping the real compiled matcher). The scheduler is held at a gate while every request is
submitted, so they are admitted and decoded as one batch.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import pytest

from radixgen.runtime.constrained import Grammar
from radixgen.runtime.generate_input import GenerateInput
from radixgen.runtime.request import FinishKind, Req
from tests.helpers import assert_idle_invariant

PROMPTS = ["The capital of France is", "Once upon a time", "def add(a, b):\n"]
GREEDY = {"max_new_tokens": 16, "temperature": 0, "ignore_eos": True}
TIMEOUT = 120


class InjectedFault(RuntimeError):
    pass


class FaultyGrammar(Grammar):
    """A real compiled grammar whose `stage` raises from its `after`-th use on."""

    def __init__(self, matcher: Any, stage: str, after: int):
        super().__init__(matcher)
        self.stage, self.after, self.calls = stage, after, 0

    def _use(self, stage: str) -> None:
        if stage == self.stage:
            self.calls += 1
            if self.calls > self.after:
                raise InjectedFault(f"injected {stage} fault")

    @property
    def matcher(self) -> Any:  # the token masker reaches the matcher through this
        self._use("mask")
        return super().matcher

    def accept(self, token: int) -> bool:
        self._use("accept")
        return super().accept(token)

    def forced_tokens(self) -> list[int]:
        self._use("forced")
        return super().forced_tokens()


def _reqs(engine, text: str, rid: str, stream: bool = False, **params: Any) -> list[Req]:
    request = GenerateInput.of(
        text=text, sampling_params={**GREEDY, **params}, rid=rid, stream=stream
    )
    reqs, _ = engine.make_requests(request)
    return reqs


def _run_together(engine, reqs: list[Req], sinks: dict[str, Any] | None = None) -> dict:
    """Submit `reqs` while the scheduler waits at a gate (so they form one batch); returns the
    final output of each request that delivers one, keyed by its label."""
    finals: queue.Queue = queue.Queue()
    sinks = sinks or {}

    def collect(out: dict[str, Any]) -> None:
        if out["meta_info"]["finish_reason"] is not None:
            finals.put(out)

    gate = threading.Event()
    held = engine.scheduler.call(lambda: gate.wait(TIMEOUT))
    for req in reqs:
        engine.scheduler.submit(req, sinks.get(req.rid, collect))
    gate.set()
    held.result(timeout=TIMEOUT)
    expected = len(reqs) - len(sinks)
    outs = [finals.get(timeout=TIMEOUT) for _ in range(expected)]
    return {out["meta_info"]["id"]: out for out in outs}


@pytest.fixture(scope="module")
def alone(engine) -> dict[str, dict]:
    """Each prompt's greedy output when it runs by itself."""
    return {p: engine.generate(p, dict(GREEDY)) for p in PROMPTS}


def _assert_internal_error(req: Req) -> None:
    reason = req.finish_reason
    assert reason is not None and reason.kind is FinishKind.ABORT, reason
    assert reason.status_code == 500
    assert reason.message == f"internal error (request {req.rid})"


def _assert_unharmed(outs: dict[str, dict], alone: dict[str, dict]) -> None:
    for i, prompt in enumerate(PROMPTS):
        out = outs[f"good-{i}"]
        assert out["output_ids"] == alone[prompt]["output_ids"], prompt
        assert out["text"] == alone[prompt]["text"]
        assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 16}


def _assert_idle(engine) -> None:
    """Every request has ended (a failed one included) and its KV is back in the pool."""
    assert_idle_invariant(engine)  # through the scheduler's inbox: after its last step
    assert engine.scheduler.active_requests == 0


@pytest.mark.parametrize(
    ("stage", "after"),
    [("mask", 3), ("accept", 2), ("forced", 0), ("forced", 3)],
    ids=["grammar-mask-mid-decode", "grammar-accept", "grammar-at-admission", "grammar-forced"],
)
def test_failing_grammar_ends_only_its_request(engine, alone, stage, after):
    good = [r for i, p in enumerate(PROMPTS) for r in _reqs(engine, p, f"good-{i}")]
    (bad,) = _reqs(engine, "Answer:", "bad", regex=r"[a-z ]{1,40}")
    bad.grammar = FaultyGrammar(bad.grammar.matcher, stage, after)
    outs = _run_together(engine, [good[0], bad, *good[1:]])

    _assert_unharmed(outs, alone)
    _assert_internal_error(bad)
    failed = outs["bad"]["meta_info"]["finish_reason"]
    assert failed == {
        "type": "abort",
        "message": f"internal error (request {bad.rid})",
        "status_code": 500,
    }
    assert bad.grammar.calls > after  # the fault did fire
    _assert_idle(engine)


def test_raising_sink_ends_only_its_request(engine, alone):
    """A streaming caller whose sink raises (its event loop is gone, say) mid-generation."""
    good = [r for i, p in enumerate(PROMPTS) for r in _reqs(engine, p, f"good-{i}")]
    (bad,) = _reqs(engine, "Tell me a story.", "bad", stream=True)
    calls = []

    def broken_sink(out: dict[str, Any]) -> None:
        calls.append(out)
        if len(calls) >= 3:
            raise InjectedFault("injected sink fault")

    outs = _run_together(engine, [*good[:2], bad, good[2]], {bad.rid: broken_sink})

    _assert_unharmed(outs, alone)
    _assert_internal_error(bad)
    assert len(calls) == 3  # nothing is sent to a sink after it raised
    assert len(bad.output_ids) < GREEDY["max_new_tokens"]  # ended early, not at its length
    _assert_idle(engine)


def _labelled(engine, tenant: str, label: str = "job") -> Req:
    request = GenerateInput.of(text=PROMPTS[0], sampling_params=dict(GREEDY), rid=label)
    (req,), _ = engine.make_requests(request, tenant)
    return req


@pytest.mark.parametrize("how", ["by-label", "all-of-tenant"])
def test_abort_touches_only_the_callers_tenant(engine, alone, how):
    """Two tenants use the same label; an abort by one of them ends only its own request.
    The abort is queued behind both submissions, before either is scheduled."""
    mine, theirs = _labelled(engine, "tenant-a"), _labelled(engine, "tenant-b")
    finals: queue.Queue = queue.Queue()
    gate = threading.Event()
    held = engine.scheduler.call(lambda: gate.wait(TIMEOUT))
    for req in (mine, theirs):
        engine.scheduler.submit(req, lambda out, req=req: _put_final(finals, req, out))
    if how == "by-label":
        engine.abort("job", "tenant-a")
        engine.abort("job", None)  # the keyless caller is a tenant of its own, too
    else:
        engine.abort_all("tenant-a")
    gate.set()
    held.result(timeout=TIMEOUT)
    outs = dict(finals.get(timeout=TIMEOUT) for _ in range(2))

    assert outs[mine.rid]["meta_info"]["finish_reason"]["type"] == "abort"
    assert outs[mine.rid]["output_ids"] == []
    assert outs[theirs.rid]["output_ids"] == alone[PROMPTS[0]]["output_ids"]
    assert outs[theirs.rid]["meta_info"]["id"] == "job"
    _assert_idle(engine)


def _put_final(finals: queue.Queue, req: Req, out: dict[str, Any]) -> None:
    if out["meta_info"]["finish_reason"] is not None:
        finals.put((req.rid, out))
