"""ModelRunner: owns the model weights, the KV pool and attention (its planner and executor).

`forward(batch)` is the whole contract with the scheduler: it takes a `ForwardBatch` and returns
the float32 logits of `batch.logit_rows`. The runner never reads scheduler state.

A LLaVA-style model also has its image path (`vision`): the batch's image spans are encoded (or
found in `vision_cache`) and their rows replace the placeholder tokens' embeddings.
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
from radixgen.runtime.model.attention.plan import LayerPlans, PlanTarget, map_slots
from radixgen.runtime.model.batch import ForwardBatch
from radixgen.runtime.model.fused_decode import FusedDecode
from radixgen.runtime.model.gemma3 import Gemma3ForCausalLM, Qwen3ForCausalLM
from radixgen.runtime.model.layers import RotaryEmbedding, rope_inv_freq
from radixgen.runtime.model.llama import LlamaForCausalLM
from radixgen.runtime.model.llava import LlavaVision, split_llava_weights
from radixgen.runtime.model.loader import ModelSource
from radixgen.runtime.multimodal.encoder_cache import VisionCache

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
        weights = source.iter_weights(model_config)
        self.vision: LlavaVision | None = None
        self.vision_cache = VisionCache(engine_config.vision_cache_images)
        if model_config.vision is not None:
            vision_weights: dict[str, torch.Tensor] = {}
            model.load_weights(split_llava_weights(weights, vision_weights))
            with torch.device("meta"):
                vision = LlavaVision(model_config.vision, model_config.hidden_size)
            vision = vision.to_empty(device=self.device)
            vision.load_weights(vision_weights.items())
            self.vision = vision.to(self.device, self.dtype).eval()
        else:
            model.load_weights(weights)
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

        self.kv_pool = self._kv_pool(model_config, engine_config)
        self.req_table = ReqToTokenTable(
            engine_config.max_running_requests + 1, context_len, self.device
        )
        self.attention = self._attention_executor(model_config, engine_config)
        self.planner = AttentionPlanner(
            self.req_table, engine_config.tuning, self.attention.target, self.dtype
        )
        logger.info("attention executor: %s", type(self.attention).__name__)
        self.fused_decode = None
        self.fused_planner = self.planner  # plans the passes the fused step may take
        if self.kernels.decode_attention is not None and not isinstance(
            self.attention, ReferenceExecutor
        ):
            kernel = self.kernels.decode_step
            self.fused_decode = FusedDecode.build(self.model, kernel, self.kv_pool)
        if self.fused_decode is not None:
            logger.info("passes of <= %d tokens run fused", self.fused_decode.max_tokens)
            if self.attention.target is not PlanTarget.IN_PLACE:  # the AMX segment executor:
                # its plans are for its kernel; the fused step reads the pool in place
                self.fused_planner = AttentionPlanner(
                    self.req_table, engine_config.tuning, PlanTarget.IN_PLACE, self.dtype
                )

    def _kv_pool(self, model_config: ModelConfig, engine_config: EngineConfig) -> KVPool:
        """The KV pool; hybrid (a smaller pool for the sliding-window layers) when the model
        has them, unless disabled."""
        swa_layers: frozenset[int] = frozenset()
        swa_size = 0
        window = model_config.sliding_window
        if model_config.has_sliding_layers and not engine_config.disable_hybrid_swa_memory:
            layers = range(model_config.num_layers)
            swa_layers = frozenset(i for i in layers if model_config.layer_window(i) is not None)
            swa_size = engine_config.swa_pool_tokens(window)
        return KVPool(
            engine_config.kv_cache_tokens,
            model_config.num_layers,
            model_config.num_kv_heads,
            model_config.head_dim,
            self.dtype,
            self.device,
            swa_layers,
            swa_size,
        )

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
        fused = self.fused_decode
        plan = None
        if fused is not None and not batch.images and batch.num_tokens <= fused.max_tokens:
            plan = self.fused_planner.plan(batch)
            if fused.serves(batch, plan):
                return fused.forward(batch, plan)
            if self.fused_planner is not self.planner:
                plan = None
        if plan is None:
            plan = self.planner.plan(batch)
        window = self.model_config.sliding_window
        if self.model_config.has_sliding_layers:
            local = self.planner.plan(batch, window)
            if self.kv_pool.hybrid:  # the sliding-window layers' KV lies in SWA slots
                local = map_slots(local, self.kv_pool.swa_slot_of)
            plan = LayerPlans(plan, local, window)
        args = (batch.input_ids, batch.positions, self.attention, plan, batch.logit_rows)
        if batch.images:  # LLaVA: the image placeholders' rows come from the vision tower
            return self.model(*args, self._input_embeds(batch))
        return self.model(*args)

    @torch.inference_mode()
    def _input_embeds(self, batch: ForwardBatch) -> torch.Tensor:  # [T, hidden]
        """Token embeddings with every image placeholder row replaced by its encoder row."""
        if self.vision is None:
            raise ValueError("this model takes no images")
        ids = batch.input_ids
        x = self.model.embed_tokens(ids.clamp(min=0))  # [T, hidden]; image rows overwritten
        features = self.vision_cache.features(
            [span.image for span in batch.images], self.vision.encode
        )
        covered = 0
        for span in batch.images:
            rows = features[span.image.pad_id][span.begin : span.end]  # [n, hidden]
            x[span.row : span.row + rows.shape[0]] = rows.to(x.dtype)
            covered += rows.shape[0]
        if covered != int((ids < 0).sum()):
            raise ValueError("image spans do not cover the batch's image placeholder tokens")
        return x
