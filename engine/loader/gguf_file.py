"""Read a GGUF file: its metadata as a ModelConfig, its tensors dequantized under HF names.

Architectures: llama, qwen2, qwen3, gemma2, gemma3, phi3. llama.cpp's converter changes a few
tensors on the way, undone here: for `llama` it reorders the rows of q/k for its interleaved RoPE
(our rotary uses HF's rotate_half layout: `unpermute`); for Gemma it stores every norm weight
plus one (Gemma's 1 + w applied ahead of time); Phi-3's LongRoPE factors are tensors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np
import torch
from tqdm import tqdm

from pagoda.engine.models.config import ModelConfig

# Metadata arrays too big to decode just for the config (the tokenizer reads them itself).
_SKIPPED_ARRAYS = (
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.scores",
)

_TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Per architecture: GGUF block names that mean something else than in llama's layout.
_ARCH_BLOCK_NAMES = {
    "gemma2": {
        "post_attention_norm": "post_attention_layernorm",
        "ffn_norm": "pre_feedforward_layernorm",
        "post_ffw_norm": "post_feedforward_layernorm",
    },
    "phi3": {"attn_qkv": "self_attn.qkv_proj", "ffn_up": "mlp.gate_up_proj"},
    "qwen3": {"attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"},
}
_ARCH_BLOCK_NAMES["gemma3"] = {**_ARCH_BLOCK_NAMES["gemma2"], **_ARCH_BLOCK_NAMES["qwen3"]}
ROPE_FREQS = "rope_freqs.weight"
# Tensors that are part of the config, not weights (Llama 3.1's and Phi-3's RoPE factors).
CONFIG_TENSORS = (ROPE_FREQS, "rope_factors_long.weight", "rope_factors_short.weight")
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def open_gguf(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def gguf_model_config(reader: gguf.GGUFReader) -> ModelConfig:
    meta = {k: f.contents() for k, f in reader.fields.items() if k not in _SKIPPED_ARRAYS}
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    factors = {
        t.name.removesuffix(".weight"): _dequantize(t).tolist()
        for t in reader.tensors
        if t.name in CONFIG_TENSORS
    }
    return ModelConfig.from_gguf(meta, shapes, factors)


def hf_name(name: str, arch: str = "llama") -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _BLOCK.fullmatch(name)
    names = {**_BLOCK_NAMES, **_ARCH_BLOCK_NAMES.get(arch, {})}
    if m is None or m.group(2) not in names:
        raise ValueError(f"unexpected GGUF tensor {name!r}")
    return f"model.layers.{m.group(1)}.{names[m.group(2)]}.{m.group(3)}"


def _dequantize(t: gguf.ReaderTensor) -> torch.Tensor:
    # np.require: a float32 tensor comes back as a read-only view of the mapped file.
    w = np.require(gguf.quants.dequantize(t.data, t.tensor_type), requirements=["C", "W"])
    return torch.from_numpy(w).reshape(tuple(int(n) for n in reversed(t.shape)))


def unpermute(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head row interleave of q/k (weights and biases alike)."""
    return w.reshape(num_heads, -1, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_weights(reader: gguf.GGUFReader, cfg: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, float32 tensor) for every tensor, with a progress bar on stderr."""
    arch = str(reader.fields["general.architecture"].contents())
    for t in tqdm(reader.tensors, desc="Dequantizing GGUF", unit="tensor", leave=False):
        if t.name in CONFIG_TENSORS:
            continue
        name = hf_name(t.name, arch)
        w = _dequantize(t)
        if arch == "llama" and ".q_proj." in name:
            w = unpermute(w, cfg.num_heads)
        elif arch == "llama" and ".k_proj." in name:
            w = unpermute(w, cfg.num_kv_heads)
        elif arch.startswith("gemma") and name.endswith("norm.weight"):
            w = w - 1.0
        yield name, w
