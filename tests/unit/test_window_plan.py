"""Sliding-window plans equal plain windowed causal attention of each request over its KV.

A token at position p of its request sees the positions (p - window, p]. Batches mix what the
scheduler sends: decode rows past the window and inside it, extends that start before the
window and cross it, fresh prompts longer than the window, and requests that share cached
prefixes (their rows of the req-to-token table point at the same slots).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from radixgen.runtime.model.attention import (
    AttentionPlanner,
    NativeExecutor,
    PlanTarget,
    ReferenceExecutor,
)
from radixgen.runtime.model.attention.plan import AttentionPlan, Method, SplitPlan
from radixgen.runtime.tuning import Tuning
from tests.unit.test_attention_plan import Scene

H, HKV, D = 4, 1, 32
F32 = {"rtol": 1e-4, "atol": 1e-5}


def window_batch(rng: random.Random, kind: str, window: int) -> list[tuple[list[int], int]]:
    """(KV slots of every position, tokens extended in this batch) per request."""
    next_slot = [1]

    def take(n: int) -> list[int]:
        slots = list(range(next_slot[0], next_slot[0] + n))
        next_slot[0] += n
        return slots

    shared = take(rng.randint(window, 3 * window))  # a cached prefix longer than the window
    requests = []
    for _ in range(rng.randint(2, 5)):
        if kind == "decode":
            new = 1
        elif kind == "mixed":
            new = rng.choice([1, 1, rng.randint(2, 3 * window)])
        else:
            new = rng.randint(1, 3 * window)
        if rng.random() < 0.5:
            requests.append((shared + take(rng.randint(0, window) + new), new))
        else:
            requests.append((take(rng.randint(0, 2 * window) + new), new))
    return requests


class WindowScene(Scene):
    """test_attention_plan's scene of one batch, planned and checked with a window."""

    def __init__(self, requests, window: int, dtype=torch.float32):
        super().__init__(requests, dtype, heads=(H, HKV), head_dim=D)
        self.window = window

    def plan(self, target: PlanTarget, tuning: Tuning | None = None):
        planner = AttentionPlanner(self.table, tuning or Tuning(), target, self.pool.k.dtype)
        return planner.plan(self.batch, self.window)

    def reference(self) -> torch.Tensor:
        """Windowed causal attention per request over its gathered KV, in float32."""
        outs, first = [], 0
        for slot_list, n in self.requests:
            k = self.pool.k[0, slot_list].float().repeat_interleave(H // HKV, dim=1)  # [L, H, D]
            v = self.pool.v[0, slot_list].float().repeat_interleave(H // HKV, dim=1)
            qr = self.q[first : first + n].float().view(n, H, D)
            L = len(slot_list)
            keys, queries = torch.arange(L)[None, :], torch.arange(L - n, L)[:, None]
            mask = (keys <= queries) & (keys > queries - self.window)  # [n, L]
            out = F.scaled_dot_product_attention(
                qr.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask
            )  # [H, n, D]
            outs.append(out.transpose(0, 1).reshape(n, H * D))
            first += n
        return torch.cat(outs)


def _passes(plan) -> list[AttentionPlan]:
    return [part for _, part in plan.parts] if isinstance(plan, SplitPlan) else [plan]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["decode", "extend", "mixed"])
@pytest.mark.parametrize("window", [1, 7, 24])
@pytest.mark.parametrize("target", [PlanTarget.GATHER, PlanTarget.IN_PLACE])
def test_window_plans_compute_windowed_attention(seed, kind, window, target):
    scene = WindowScene(window_batch(random.Random(seed), kind, window), window)
    plan = scene.plan(target)
    assert all(part.shared == () for part in _passes(plan))
    out = scene.run(ReferenceExecutor(scene.pool, H, HKV), plan)
    torch.testing.assert_close(out, scene.reference(), **F32)


def test_the_check_catches_a_plan_without_its_window():
    """The same batch planned as global attention attends past the window: the check fails."""
    scene = WindowScene(window_batch(random.Random(1), "extend", 7), 7)
    planner = AttentionPlanner(scene.table, Tuning(), PlanTarget.GATHER, torch.float32)
    out = scene.run(ReferenceExecutor(scene.pool, H, HKV), planner.plan(scene.batch))
    assert not torch.allclose(out, scene.reference(), **F32)
    windowed = scene.plan(PlanTarget.GATHER)
    unbounded = replace(windowed, own=replace(windowed.own, starts=None))
    out = scene.run(ReferenceExecutor(scene.pool, H, HKV), unbounded)
    assert not torch.allclose(out, scene.reference(), **F32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["decode", "extend", "mixed"])
@pytest.mark.parametrize("window", [1, 7, 24])
def test_flash_executor_runs_window_plans(seed, kind, window):
    scene = WindowScene(window_batch(random.Random(seed), kind, window), window)
    executor = NativeExecutor(scene.pool, H, HKV, None)
    plan = scene.plan(executor.target)
    torch.testing.assert_close(scene.run(executor, plan), scene.reference(), **F32)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["decode", "extend", "mixed"])
@pytest.mark.parametrize("window", [1, 7, 24])
def test_native_executor_runs_window_plans(seed, kind, window, kernel):
    """Decode rows read their window in place; extends the window cuts gather (padded)."""
    scene = WindowScene(window_batch(random.Random(seed), kind, window), window)
    executor = NativeExecutor(scene.pool, H, HKV, kernel)
    plan = scene.plan(executor.target)
    for part in _passes(plan):
        if part.own.starts is not None:
            assert part.own.method is Method.PADDED
    if kind == "decode":
        assert plan.own.method is Method.IN_PLACE
    torch.testing.assert_close(scene.run(executor, plan), scene.reference(), **F32)
