"""ReferenceExecutor: any plan, in plain PyTorch, on any device.

It reads nothing of a pass but its meaning (tokens, their problems, limits, slots) and ignores
the method and layout, so it checks the planner on its own: every plan the planner can build,
for any target, must give the same attention as each request's causal attention over its KV.
It is slow (every token gathers its problem's keys) and meant for tests and debugging
(`--attention-backend reference`).
"""

from __future__ import annotations

import torch

from radixgen.runtime.model.attention.executor import AttentionExecutor
from radixgen.runtime.model.attention.partials import merge_tokens
from radixgen.runtime.model.attention.plan import AttentionPlan, PlanTarget, ProblemSet

NO_KEYS_LSE = -1e30  # a token that sees no key: zero output, and no weight in a merge


class ReferenceExecutor(AttentionExecutor):
    target = PlanTarget.GATHER  # the plans it is given by default; it runs any

    def attend(self, q, k, v, k_buf, v_buf, plan: AttentionPlan) -> torch.Tensor:
        T, D = q.shape[0], q.shape[1] // self.num_heads
        q_tokens = q.view(T, self.num_kv_heads, self.group, D).float()
        out, lse = self.attend_pass(q_tokens, k_buf, v_buf, plan.own)
        for level in plan.shared:
            level_out, level_lse = self.attend_pass(q_tokens, k_buf, v_buf, level)
            out, lse = merge_tokens(out, lse, level.tokens, level_out, level_lse)
        return out

    @staticmethod
    def attend_pass(
        q: torch.Tensor,  # [T, Hkv, G, D] float32, every token of the batch
        k_buf: torch.Tensor,  # [S, Hkv, D]
        v_buf: torch.Tensor,  # [S, Hkv, D]
        problems: ProblemSet,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # out [N, Hkv, G, D], lse [N, Hkv, G] float32
        """softmax(q k^T / sqrt(D)) v of each of the pass's tokens over its visible slots
        (slots[problem, starts:limits])."""
        token_q = q if problems.tokens is None else q[problems.tokens]  # [N, Hkv, G, D]
        N = token_q.shape[0]
        rows = torch.arange(N) if problems.token_problem is None else problems.token_problem
        slots = problems.slots[rows]  # [N, L]
        keys = k_buf[slots].float()  # [N, L, Hkv, D]
        values = v_buf[slots].float()
        scores = torch.einsum("nhgd,nlhd->nhgl", token_q, keys) * q.shape[-1] ** -0.5
        columns = torch.arange(slots.shape[1])[None, :]  # [1, L]
        visible = columns < problems.limits[:, None]  # [N, L]
        if problems.starts is not None:  # sliding window: the first slots are out of sight
            visible &= columns >= problems.starts[:, None]
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # [N, Hkv, G]; -inf where nothing is visible
        weights = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
        out = torch.einsum("nhgl,nlhd->nhgd", weights, values)
        return out, lse.clamp(min=NO_KEYS_LSE)
