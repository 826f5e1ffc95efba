"""Qwen3-MoE: Qwen3's attention (q/k norm) with Mixtral's sparse MLP (its experts named
gate_proj/up_proj/down_proj, norm_topk_prob choosing the renormalization, mlp_only_layers dense)."""

from __future__ import annotations

from pagoda.engine.models.mixtral import MixtralDecoderLayer, MixtralForCausalLM
from pagoda.engine.models.qwen3 import QKNormAttention


class Qwen3MoeDecoderLayer(MixtralDecoderLayer):
    attention_cls = QKNormAttention


class Qwen3MoeForCausalLM(MixtralForCausalLM):
    layer_cls = Qwen3MoeDecoderLayer
