"""LLaVA-1.5's image path: CLIP tower -> selected hidden states -> projector (linear, act, linear)
-> one row per placeholder token, in the language model's embedding space.

Checkpoint names come in two layouts, both mapped here: llava-hf's own files
(`language_model.model.*`, `language_model.lm_head.*`, `vision_tower.*`,
`multi_modal_projector.*`) and what transformers >= 5 saves (`model.language_model.*`,
`lm_head.*`, `model.vision_tower.*` with or without the tower's `vision_model.` level,
`model.multi_modal_projector.*`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from radixgen.runtime.config import VisionConfig
from radixgen.runtime.model.clip import ClipVisionTower, activation


class LlavaProjector(nn.Module):
    """`multi_modal_projector`: [.., vision hidden x layers] -> [.., text hidden]."""

    def __init__(self, config: VisionConfig, text_hidden: int):
        super().__init__()
        width = config.hidden_size * len(config.feature_layers)
        self.linear_1 = nn.Linear(width, text_hidden, bias=config.projector_bias)
        self.act = activation(config.projector_act)
        self.linear_2 = nn.Linear(text_hidden, text_hidden, bias=config.projector_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaVision(nn.Module):
    def __init__(self, config: VisionConfig, text_hidden: int):
        super().__init__()
        self.config = config
        self.vision_tower = ClipVisionTower(config)
        self.multi_modal_projector = LlavaProjector(config, text_hidden)

    @torch.inference_mode()
    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] preprocessed images -> [N, tokens_per_image, text hidden]."""
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        states = self.vision_tower.vision_model.hidden_states(
            pixel_values.to(dtype), self.config.feature_layers
        )
        if self.config.select_strategy == "default":
            states = [s[:, 1:] for s in states]  # drop the CLS position
        return self.multi_modal_projector(torch.cat(states, dim=-1))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Tensors named as in this module (see `split_llava_weights`); raise on a missing one.
        Buffers a checkpoint may carry (`position_ids`) are ignored."""
        params = dict(self.named_parameters())
        loaded = set()
        for name, tensor in weights:
            if name not in params:
                if name.endswith("position_ids"):
                    continue
                raise ValueError(f"unexpected vision weight {name!r}")
            params[name].data.copy_(tensor)
            loaded.add(name)
        missing = set(params) - loaded
        if missing:
            raise ValueError(f"checkpoint is missing vision weights: {sorted(missing)[:5]} ...")


def split_llava_weights(
    weights: Iterable[tuple[str, torch.Tensor]], vision: dict[str, torch.Tensor]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield the language model's tensors under the names `LlamaForCausalLM.load_weights`
    takes; put the tower's and projector's into `vision` under `LlavaVision`'s names."""
    for name, tensor in weights:
        local = name.removeprefix("model.")  # transformers >= 5 nests everything in `model.`
        if local.startswith("vision_tower.") and not local.startswith("vision_tower.vision_model."):
            vision["vision_tower.vision_model." + local.removeprefix("vision_tower.")] = tensor
        elif local.startswith(("vision_tower.", "multi_modal_projector.")):
            vision[local] = tensor
        elif local.startswith("language_model."):
            yield local.removeprefix("language_model."), tensor  # `model.layers...` or `layers...`
        else:
            yield name, tensor  # `lm_head.weight` (transformers >= 5)
