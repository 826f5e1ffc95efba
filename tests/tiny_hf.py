"""Tiny random HF models, written by transformers itself: the unit tiers' model families and
the e2e tier's Hub model."""

from __future__ import annotations

import torch

TINY = {
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def hf_model(arch: str, seed: int = 0, **overrides):
    import transformers

    # Gemma 3's text-only model takes the text half of its multimodal config.
    cfg_name = {"Gemma3ForCausalLM": "Gemma3TextConfig"}.get(
        arch, arch.replace("ForCausalLM", "Config")
    )
    cfg_class = getattr(transformers, cfg_name)
    torch.manual_seed(seed)
    model = getattr(transformers, arch)(cfg_class(**{**TINY, **overrides})).eval()
    with torch.no_grad():  # HF zero-inits biases and ones-inits norms: make every tensor count
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model
