"""A tiny Llama-shaped HF checkpoint with random weights, written as config.json + safetensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def tiny_config(**overrides: Any) -> dict[str, Any]:
    # A vocabulary of 300 is no multiple of 64 * tp: the padding rows are exercised.
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    return {**cfg, **overrides}


def write_tiny_checkpoint(folder: Path, seed: int = 0, **overrides: Any) -> Path:
    """Weights large enough (std 0.15) that greedy choices have clear margins."""
    cfg = tiny_config(**overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg))
    gen = torch.Generator().manual_seed(seed)
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * d, cfg["num_key_value_heads"] * d
    bias = cfg.get("attention_bias", cfg["architectures"][0] == "Qwen2ForCausalLM")

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * 0.15

    tensors = {"model.embed_tokens.weight": rand(v, h) * 6, "model.norm.weight": 1 + rand(h)}
    if not cfg["tie_word_embeddings"]:
        tensors["lm_head.weight"] = rand(v, h)
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        shapes = {
            "self_attn.q_proj": (q, h),
            "self_attn.k_proj": (kv, h),
            "self_attn.v_proj": (kv, h),
            "self_attn.o_proj": (h, q),
            "mlp.gate_proj": (i, h),
            "mlp.up_proj": (i, h),
            "mlp.down_proj": (h, i),
        }
        for name, shape in shapes.items():
            tensors[f"{p}{name}.weight"] = rand(*shape)
        if bias:
            for name, rows in (("q_proj", q), ("k_proj", kv), ("v_proj", kv)):
                tensors[f"{p}self_attn.{name}.bias"] = rand(rows)
        tensors[f"{p}input_layernorm.weight"] = 1 + rand(h)
        tensors[f"{p}post_attention_layernorm.weight"] = 1 + rand(h)
    save_file(tensors, str(folder / "model.safetensors"))
    return folder


def write_tiny_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer over the tiny vocabulary: "t5 t17" is [5, 17]; the EOS (id 2) is
    "</s>" (as "t2" it would be matched inside "t245")."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}" if i != 2 else "</s>": i for i in range(tiny_config()["vocab_size"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, "t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="</s>").save_pretrained(
        str(folder)
    )
    return folder
