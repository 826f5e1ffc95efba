"""Gemma 3 (text): Gemma 2 with q/k norms (Gemma-style, 1 + w) instead of the attention soft cap,
five sliding-window layers to each global one, and a RoPE base of their own for the sliding ones
(rope_local_base_freq); the global ones carry the RoPE scaling."""

from __future__ import annotations

from pagoda.engine.layers.norm import GemmaRMSNorm
from pagoda.engine.models.gemma2 import Gemma2DecoderLayer, Gemma2ForCausalLM
from pagoda.engine.models.qwen3 import QKNormAttention


class GemmaQKNormAttention(QKNormAttention):
    norm_cls = GemmaRMSNorm


class Gemma3DecoderLayer(Gemma2DecoderLayer):
    attention_cls = GemmaQKNormAttention


class Gemma3ForCausalLM(Gemma2ForCausalLM):
    layer_cls = Gemma3DecoderLayer
