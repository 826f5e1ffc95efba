"""Gemma 2: the Llama block with Gemma's differences.

- RMSNorm as norm(x) * (1 + w), and four norms a layer: before and after attention and the MLP;
- the embedding scaled by sqrt(hidden_size); the LM head tied to it;
- tanh-GELU gating in the MLP;
- attention scores scaled by query_pre_attn_scalar^-1/2 and soft-capped (c * tanh(s / c)),
  the final logits soft-capped too;
- layers alternating a sliding window (even ones) with global attention.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from pagoda.engine.attention import AttentionBackend, AttentionMetadata
from pagoda.engine.layers.norm import GemmaRMSNorm
from pagoda.engine.layers.rotary import RotaryEmbedding
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.llama import (
    KVCache,
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
)
from pagoda.engine.models.pipeline import PPMissingLayer


class Gemma2DecoderLayer(nn.Module):
    attention_cls: type[LlamaAttention] = LlamaAttention

    def __init__(
        self, cfg: ModelConfig, backend: AttentionBackend, rotary: RotaryEmbedding, layer_idx: int
    ) -> None:
        super().__init__()
        size, eps = cfg.hidden_size, cfg.rms_norm_eps
        self.input_layernorm = GemmaRMSNorm(size, eps)
        self.self_attn = self.attention_cls(cfg, backend, rotary, layer_idx)
        self.post_attention_layernorm = GemmaRMSNorm(size, eps)
        self.pre_feedforward_layernorm = GemmaRMSNorm(size, eps)
        self.mlp = LlamaMLP(cfg)
        self.post_feedforward_layernorm = GemmaRMSNorm(size, eps)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: KVCache,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.post_attention_layernorm(self.self_attn(positions, x, kv_cache, meta))
        x, residual = self.pre_feedforward_layernorm(x, residual)
        return self.post_feedforward_layernorm(self.mlp(x)), residual


class Gemma2Model(LlamaModel):
    def __init__(
        self,
        cfg: ModelConfig,
        backend: AttentionBackend,
        layer_cls: type[nn.Module] = LlamaDecoderLayer,
    ) -> None:
        super().__init__(cfg, backend, layer_cls)
        if not isinstance(self.norm, PPMissingLayer):
            self.norm = GemmaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.normalizer = cfg.hidden_size**0.5
        if cfg.local_rope_theta is not None:  # Gemma 3: the sliding layers' own RoPE, unscaled
            local = RotaryEmbedding(
                cfg.head_dim,
                cfg.max_position_embeddings,
                cfg.local_rope_theta,
                rotary_dim=cfg.rotary_dim,
            )
            for i, layer in enumerate(self.layers):
                if cfg.layer_types[i] == "sliding_attention" and hasattr(layer, "self_attn"):
                    cast(nn.Module, layer.self_attn).rotary = local

    def embed_input(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(input_ids)
        # The scale rounded to the model's dtype first, as HF does.
        return x * torch.tensor(self.normalizer, dtype=x.dtype)


class Gemma2ForCausalLM(LlamaForCausalLM):
    model_cls = Gemma2Model
    layer_cls = Gemma2DecoderLayer

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().compute_logits(hidden)
        cap = self.config.final_logit_softcapping
        return logits if cap is None else torch.tanh(logits / cap) * cap
