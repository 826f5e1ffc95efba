"""GGUF files beyond llama: qwen2, qwen3, gemma2, gemma3 and phi3, written as llama.cpp's
converter writes them (Gemma's norms plus one, Phi-3's fused tensors, LongRoPE factor tensors
and partial rotary dimension count), give HF's logits."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from tiny_hf import hf_model
from tiny_models import IDS, assert_same_logits

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

GGUF_BLOCK = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.gate_up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
GEMMA_BLOCK = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
GEMMA = {"head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 16, "num_hidden_layers": 3}
LONGROPE = {
    "rope_type": "longrope",
    "short_factor": [1.0 + 0.1 * i for i in range(8)],
    "long_factor": [2.0 + 0.5 * i for i in range(8)],
}
CASES = {
    "qwen2": ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 32}),
    "gemma2": ("Gemma2ForCausalLM", GEMMA),
    "gemma3": (
        "Gemma3ForCausalLM",
        {
            **GEMMA,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 100000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        },
    ),
    # Phi-4-mini's: RoPE over 3/4 of each head (12 of 16 dims: 6 LongRoPE factors)
    "phi3": (
        "Phi3ForCausalLM",
        {
            "pad_token_id": 0,
            "max_position_embeddings": 1024,
            "original_max_position_embeddings": 256,
            "partial_rotary_factor": 0.75,
            "rope_scaling": {k: v[:6] if k.endswith("factor") else v for k, v in LONGROPE.items()},
            "sliding_window": 7,
        },
    ),
}


def write_gguf(hf, arch: str, path) -> None:
    c = hf.config
    w = gguf.GGUFWriter(path, arch)
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_key_length(c.head_dim if hasattr(c, "head_dim") else c.hidden_size // 4)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_eos_token_id(2)
    rope = c.rope_parameters
    w.add_rope_freq_base(rope.get("full_attention", rope)["rope_theta"])
    if getattr(c, "sliding_window", None):
        w.add_sliding_window(c.sliding_window)
    if arch == "gemma2":
        w.add_attn_logit_softcapping(c.attn_logit_softcapping)
        w.add_final_logit_softcapping(c.final_logit_softcapping)
    if arch == "gemma3":
        w.add_sliding_window_pattern([t == "sliding_attention" for t in c.layer_types])
    if arch == "phi3":
        w.add_rope_dimension_count(len(rope["short_factor"]) * 2)
        w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
        w.add_tensor("rope_factors_long.weight", np.array(rope["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.array(rope["short_factor"], np.float32))
    block = {**GGUF_BLOCK, **(GEMMA_BLOCK if arch.startswith("gemma") else {})}
    for name, param in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        data = param.numpy()
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            data = data + 1.0  # llama.cpp's converter applies Gemma's 1 + w ahead of time
        top = {
            "model.embed_tokens.weight": "token_embd.weight",
            "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight",
        }
        if name in top:
            w.add_tensor(top[name], data)
            continue
        _, _, layer, *part, kind = name.split(".")
        w.add_tensor(f"blk.{layer}.{block['.'.join(part)]}.{kind}", data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("arch", CASES)
def test_gguf_family(tmp_path, monkeypatch, arch: str) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hf_arch, overrides = CASES[arch]
    hf = hf_model(hf_arch, **overrides)
    path = tmp_path / f"{arch}.gguf"
    write_gguf(hf, arch, path)
    config = EngineConfig(model=str(path), max_model_len=256)  # Phi-3: the short factors
    ours, cfg = load_model(config, torch.device("cpu"), torch.float32)
    assert cfg.architecture == hf_arch and cfg.layer_types == list(
        getattr(hf.config, "layer_types", None) or cfg.layer_types
    )
    assert_same_logits(ours, cfg, hf, IDS)
