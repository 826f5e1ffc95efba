"""Tiny random HF models, written by transformers itself, and the check that ours gives their
logits; shared by the loader, Hub and model-family tests."""

from __future__ import annotations

import torch
from paged_batch import PagedBatch

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
IDS = [1, 57, 300, 4, 99, 511, 17, 8, 250, 3, 42, 77, 120, 6, 400, 9, 33, 200, 5, 64]


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


def assert_same_logits(ours, cfg, hf, ids: list[int], atol: float = 1e-4) -> None:
    got = PagedBatch(cfg, block_size=8).step(ours, [(0, ids)])[0]
    with torch.inference_mode():
        want = hf(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-4)
