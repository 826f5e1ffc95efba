"""Qwen3: the Llama block with an RMSNorm over each head of q and k before RoPE (no q/k/v bias)."""

from __future__ import annotations

import torch

from pagoda.engine.attention import AttentionBackend
from pagoda.engine.layers.norm import RMSNorm
from pagoda.engine.layers.rotary import RotaryEmbedding
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.llama import LlamaAttention, LlamaDecoderLayer, LlamaForCausalLM


class QKNormAttention(LlamaAttention):
    """Attention with q_norm and k_norm (weights [head_dim], shared by the heads)."""

    norm_cls: type[RMSNorm] = RMSNorm

    def __init__(
        self,
        cfg: ModelConfig,
        backend: AttentionBackend,
        rotary: RotaryEmbedding,
        layer_idx: int = 0,
    ) -> None:
        super().__init__(cfg, backend, rotary, layer_idx)
        self.q_norm = self.norm_cls(cfg.head_dim, cfg.rms_norm_eps)
        self.k_norm = self.norm_cls(cfg.head_dim, cfg.rms_norm_eps)

    def qk_norm(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Over [tokens * heads, head_dim] rows: the shape the norm kernel takes.
        q = self.q_norm(q.reshape(-1, self.head_dim)).view(q.shape)
        k = self.k_norm(k.reshape(-1, self.head_dim)).view(k.shape)
        return q, k


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_cls = QKNormAttention


class Qwen3ForCausalLM(LlamaForCausalLM):
    layer_cls = Qwen3DecoderLayer
