"""The same model in HF transformers, for comparisons: same file, or the same shape at random."""

from __future__ import annotations

import torch

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader.resolve import resolve_model
from pagoda.engine.models.config import ModelConfig


def load_hf_model(config: EngineConfig, mc: ModelConfig, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    resolved = resolve_model(config)
    if resolved.kind == "gguf":
        assert resolved.path is not None, "a gguf model has a path"
        model = AutoModelForCausalLM.from_pretrained(
            str(resolved.path.parent), gguf_file=resolved.path.name, dtype=dtype
        )
    elif resolved.kind == "hf":
        model = AutoModelForCausalLM.from_pretrained(str(resolved.path), dtype=dtype)
    else:
        cfg = LlamaConfig(
            vocab_size=mc.vocab_size,
            hidden_size=mc.hidden_size,
            intermediate_size=mc.intermediate_size,
            num_hidden_layers=mc.num_layers,
            num_attention_heads=mc.num_heads,
            num_key_value_heads=mc.num_kv_heads,
            head_dim=mc.head_dim,
            rms_norm_eps=mc.rms_norm_eps,
            rope_theta=mc.rope_theta,
            max_position_embeddings=mc.max_position_embeddings,
            tie_word_embeddings=mc.tie_word_embeddings,
        )
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        for p in model.parameters():
            p.data.normal_(0, 0.02)
    return model.to(device).eval()
