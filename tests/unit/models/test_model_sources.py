"""Weights from a HF folder and from a GGUF file land where HF's own model has them: tiny random
models, written by transformers and by gguf's writer, give our model HF's logits."""

from __future__ import annotations

import json
import math

import gguf
import numpy as np
import pytest
import torch
from tiny_hf import hf_model
from tiny_models import IDS, assert_same_logits

from pagoda.engine.config import EngineConfig
from pagoda.engine.loader import load_model, model_loader

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.mark.parametrize(
    "arch,overrides",
    [
        (
            "LlamaForCausalLM",
            {"rope_theta": 500000.0, "rope_scaling": LLAMA3_ROPE, "tie_word_embeddings": False},
        ),
        (
            "LlamaForCausalLM",
            {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "tie_word_embeddings": True},
        ),
        ("Qwen2ForCausalLM", {"tie_word_embeddings": True}),  # q/k/v bias
        ("MistralForCausalLM", {"tie_word_embeddings": False}),
    ],
)
def test_hf_folder(tmp_path, arch: str, overrides: dict) -> None:
    hf = hf_model(arch, **overrides)
    hf.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    ours, cfg = load_model(EngineConfig(model=str(tmp_path)), torch.device("cpu"), torch.float32)
    assert cfg.architecture == arch and cfg.eos_token_ids == [2, 7]
    assert cfg.tie_word_embeddings == overrides["tie_word_embeddings"]
    assert_same_logits(ours, cfg, hf, IDS)


def test_hf_folder_sharded_with_index(tmp_path) -> None:
    """Shards listed in the index are read; a stray consolidated file beside them is not."""
    hf = hf_model("LlamaForCausalLM", tie_word_embeddings=False)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    (tmp_path / "consolidated.safetensors").write_bytes(b"other naming scheme")
    ours, cfg = load_model(EngineConfig(model=str(tmp_path)), torch.device("cpu"), torch.float32)
    assert_same_logits(ours, cfg, hf, IDS)


def permute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf reordering of q/k rows."""
    return (
        w.reshape(num_heads, 2, w.shape[0] // num_heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
QTYPES = [
    gguf.GGMLQuantizationType.Q8_0,
    gguf.GGMLQuantizationType.Q4_0,
    gguf.GGMLQuantizationType.F16,
    gguf.GGMLQuantizationType.BF16,
]


def write_gguf(hf, path) -> None:
    """The HF model as llama.cpp would convert it, 2-D tensors in several quantized types; HF's
    weights are then replaced by what those types round-trip to, so the logits must agree."""
    c = hf.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_eot_token_id(7)
    rope = c.rope_parameters
    if rope.get("rope_type") == "llama3":
        writer.add_tensor("rope_freqs.weight", llama_cpp_rope_factors(c.head_dim, rope))
    for i, (name, param) in enumerate(hf.state_dict().items()):
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # llama.cpp stores a tied table once, as token_embd
        w = param.numpy()
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        elif name == "lm_head.weight":
            gguf_name = "output.weight"
        else:
            _, _, layer, *part, kind = name.split(".")
            gguf_name = f"blk.{layer}.{GGUF_NAMES['.'.join(part)]}.{kind}"
        if w.ndim == 1:
            writer.add_tensor(gguf_name, w)
            continue
        qtype = QTYPES[i % len(QTYPES)]
        heads = {"attn_q": c.num_attention_heads, "attn_k": c.num_key_value_heads}.get(
            gguf_name.split(".")[-2]
        )
        data = gguf.quants.quantize(permute(w, heads) if heads else w, qtype)
        writer.add_tensor(gguf_name, data, raw_shape=data.shape, raw_dtype=qtype)
        param.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_rope_factors(head_dim: int, rope: dict) -> np.ndarray:
    """What llama.cpp's converter stores for Llama 3.1's RoPE scaling (its formula, not ours)."""
    low_wavelen = rope["original_max_position_embeddings"] / rope["low_freq_factor"]
    high_wavelen = rope["original_max_position_embeddings"] / rope["high_freq_factor"]
    factors = []
    for i in range(0, head_dim, 2):
        wavelen = 2 * math.pi * rope["rope_theta"] ** (i / head_dim)
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(rope["factor"])
        else:
            smooth = (
                rope["original_max_position_embeddings"] / wavelen - rope["low_freq_factor"]
            ) / (rope["high_freq_factor"] - rope["low_freq_factor"])
            factors.append(1 / ((1 - smooth) / rope["factor"] + smooth))
    return np.array(factors, dtype=np.float32)


def test_gguf_with_llama3_rope_factors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hf = hf_model(
        "LlamaForCausalLM", rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, tie_word_embeddings=True
    )
    path = tmp_path / "llama3.gguf"
    write_gguf(hf, path)
    ours, cfg = load_model(EngineConfig(model=str(path)), torch.device("cpu"), torch.float32)
    assert cfg.rope_scaling["rope_type"] == "freq_factors" and cfg.tie_word_embeddings
    assert_same_logits(ours, cfg, hf, IDS)


def test_gguf_file_and_its_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hf = hf_model("LlamaForCausalLM", rope_theta=20000.0, tie_word_embeddings=False)
    path = tmp_path / "tiny.gguf"
    write_gguf(hf, path)
    ours, cfg = load_model(EngineConfig(model=str(path)), torch.device("cpu"), torch.float32)
    assert (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta) == (4, 2, 16, 20000.0)
    assert cfg.eos_token_ids == [2, 7] and not cfg.tie_word_embeddings
    assert_same_logits(ours, cfg, hf, IDS)
    assert (
        len(
            list(
                (tmp_path / "cache" / "pagoda" / "models").glob("tiny-*/model.float32.safetensors")
            )
        )
        == 1
    )

    def no_gguf(path):
        raise AssertionError("the second load read the GGUF file instead of the cache")

    monkeypatch.setattr(model_loader, "open_gguf", no_gguf)
    cached, cached_cfg = load_model(
        EngineConfig(model=str(path)), torch.device("cpu"), torch.float32
    )
    assert cached_cfg == cfg
    assert_same_logits(cached, cached_cfg, hf, IDS)
