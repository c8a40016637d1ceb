"""ModelRunner: owns the model weights, the KV pool and attention (its planner and executor).

`forward(batch)` is the whole contract with the scheduler: it takes a `ForwardBatch` and returns
the float32 logits of `batch.logit_rows`. The runner never reads scheduler state.
"""

from __future__ import annotations

import logging
import time

import torch

from radixgen.runtime.cache.kv_pool import KVPool
from radixgen.runtime.cache.req_table import ReqToTokenTable
from radixgen.runtime.config import EngineConfig, ModelConfig
from radixgen.runtime.kernels.engine_kernels import EngineKernels
from radixgen.runtime.model.attention import (
    AmxExecutor,
    AttentionExecutor,
    AttentionPlanner,
    NativeExecutor,
    ReferenceExecutor,
)
from radixgen.runtime.model.attention.plan import LayerPlans
from radixgen.runtime.model.batch import ForwardBatch
from radixgen.runtime.model.fused_decode import FusedDecode
from radixgen.runtime.model.gemma3 import Gemma3ForCausalLM, Qwen3ForCausalLM
from radixgen.runtime.model.layers import RotaryEmbedding, rope_inv_freq
from radixgen.runtime.model.llama import LlamaForCausalLM
from radixgen.runtime.model.loader import ModelSource

logger = logging.getLogger(__name__)

# ModelConfig.architecture -> model class (the rest are Llama-family)
_MODEL_CLASSES = {"gemma3": Gemma3ForCausalLM, "qwen3": Qwen3ForCausalLM}


class ModelRunner:
    def __init__(
        self,
        source: ModelSource,
        model_config: ModelConfig,
        engine_config: EngineConfig,
        context_len: int,
    ):
        self.model_config = model_config
        self.device = torch.device(engine_config.device)
        self.dtype = engine_config.torch_dtype
        self.kernels = EngineKernels.choose(engine_config, model_config.head_dim)
        start = time.perf_counter()
        model_class = _MODEL_CLASSES.get(model_config.architecture, LlamaForCausalLM)
        with torch.device("meta"):
            model = model_class(model_config, max_positions=context_len, kernels=self.kernels)
        model = model.to_empty(device=self.device)
        reset_rope = getattr(model, "reset_rope", None)  # buffers were on "meta"
        if reset_rope is not None:
            reset_rope()
        else:
            model.rotary.set_inv_freq(rope_inv_freq(model_config))
        model.load_weights(source.iter_weights(model_config))
        self.model = model.to(self.dtype).eval()
        for module in self.model.modules():
            if isinstance(module, RotaryEmbedding):
                module.float()  # rope tables stay float32, cast per batch
        self.model.prepack()
        int4_tokens, int4 = engine_config.int4_tokens(), self.kernels.int4
        if int4_tokens and int4 is not None:
            weights = source.iter_int4_weights(model_config)
            switched = self.model.use_int4(weights, int4_tokens, int4)
            logger.info("%d projections use 4-bit weights for small batches", switched)
            head = self.kernels.int8
            if head is not None and self.model.use_int8_head(
                source.iter_int8_weights(model_config),
                engine_config.tuning.int8_head_max_tokens_for(self.dtype),
                head,
            ):
                logger.info("the output head uses its 8-bit weights for small batches")
        logger.info("loaded %s in %.1fs", source.path, time.perf_counter() - start)

        self.kv_pool = KVPool(
            engine_config.kv_cache_tokens,
            model_config.num_layers,
            model_config.num_kv_heads,
            model_config.head_dim,
            self.dtype,
            self.device,
        )
        self.req_table = ReqToTokenTable(
            engine_config.max_running_requests + 1, context_len, self.device
        )
        self.attention = self._attention_executor(model_config, engine_config)
        self.planner = AttentionPlanner(
            self.req_table, engine_config.tuning, self.attention.target, self.dtype
        )
        logger.info("attention executor: %s", type(self.attention).__name__)
        self.fused_decode = None
        if isinstance(self.attention, NativeExecutor) and self.attention.in_place_kernel:
            kernel = self.kernels.decode_step
            self.fused_decode = FusedDecode.build(self.model, kernel, self.kv_pool)
        if self.fused_decode is not None:
            logger.info("passes of <= %d tokens run fused", self.fused_decode.max_tokens)

    def _attention_executor(
        self, model_config: ModelConfig, engine_config: EngineConfig
    ) -> AttentionExecutor:
        heads = (model_config.num_heads, model_config.num_kv_heads)
        if engine_config.attention_backend == "reference":
            return ReferenceExecutor(self.kv_pool, *heads)
        kernel = self.kernels.segment_attention  # None unless attention_backend "auto"
        if kernel is not None and not model_config.has_sliding_layers:  # no window plans
            return AmxExecutor(self.kv_pool, *heads, kernel)
        return NativeExecutor(self.kv_pool, *heads, self.kernels.decode_attention)

    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """Run one batch; returns logits [R, vocab] float32 for `batch.logit_rows`."""
        plan = self.planner.plan(batch)
        window = self.model_config.sliding_window
        if self.model_config.has_sliding_layers:
            plan = LayerPlans(plan, self.planner.plan(batch, window), window)
        elif self.fused_decode is not None and self.fused_decode.serves(batch, plan):
            return self.fused_decode.forward(batch, plan)
        return self.model(batch.input_ids, batch.positions, self.attention, plan, batch.logit_rows)
