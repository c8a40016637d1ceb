"""CLIP vision tower (ViT) as LLaVA uses it: the hidden states of chosen layers, not the pooled
output. Parameter names follow transformers' `CLIPVisionModel` under its `vision_model.`
prefix, so a checkpoint's tensors load by name.

Hidden states are indexed as in transformers: 0 is the embeddings after `pre_layrnorm`, i is
the output of encoder layer i (1-based), negative indices count from the last layer. Layers past
the deepest selected one are loaded but never run.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from radixgen.runtime.config import VisionConfig

ACTIVATIONS = {
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r} (supported: {sorted(ACTIVATIONS)})")
    return ACTIVATIONS[name]


class ClipEmbeddings(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        D = config.hidden_size
        self.class_embedding = nn.Parameter(torch.empty(D))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, D, config.patch_size, config.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(config.num_patches + 1, D)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, P+1, D]
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [N, P, D]
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)  # [N, 1, D]
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class ClipAttention(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        D = config.hidden_size
        self.num_heads = config.num_heads
        self.q_proj, self.k_proj = nn.Linear(D, D), nn.Linear(D, D)
        self.v_proj, self.out_proj = nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, S, D]
        N, S, D = x.shape
        H = self.num_heads

        def heads(t: torch.Tensor) -> torch.Tensor:  # [N, S, D] -> [N, H, S, D/H]
            return t.view(N, S, H, D // H).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        )  # [N, H, S, D/H], no mask: every patch sees every patch
        return self.out_proj(out.transpose(1, 2).reshape(N, S, D))


class ClipMLP(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.act = activation(config.hidden_act)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.self_attn = ClipAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=eps)
        self.mlp = ClipMLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, S, D], pre-norm residual blocks
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEncoder(nn.Module):
    def __init__(self, config: VisionConfig):
        super().__init__()
        self.layers = nn.ModuleList(ClipEncoderLayer(config) for _ in range(config.num_layers))


class ClipVisionModel(nn.Module):
    """`vision_model` of transformers' `CLIPVisionModel`."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.embeddings = ClipEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=eps)  # (sic) transformers' name
        self.encoder = ClipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=eps)  # pooled output only

    def hidden_states(
        self, pixel_values: torch.Tensor, indices: tuple[int, ...]
    ) -> list[torch.Tensor]:  # [N, C, H, W] -> one [N, P+1, D] per index
        count = len(self.encoder.layers) + 1
        wanted = [i % count for i in indices]  # negative: from the last layer
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        states = {0: x}
        for i, layer in enumerate(self.encoder.layers[: max(wanted)], start=1):
            x = layer(x)
            states[i] = x
        return [states[i] for i in wanted]


class ClipVisionTower(nn.Module):
    """The tower as LLaVA holds it (`vision_tower.vision_model.*`)."""

    def __init__(self, config: VisionConfig):
        super().__init__()
        self.vision_model = ClipVisionModel(config)
