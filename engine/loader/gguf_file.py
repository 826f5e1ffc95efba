"""Read a GGUF file: its metadata as a ModelConfig, its tensors dequantized under HF Llama names.

llama.cpp's converter reorders the rows of q/k projections for its interleaved RoPE; our rotary
uses HF's rotate_half layout, so those rows are put back (`unpermute`).
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
ROPE_FREQS = "rope_freqs.weight"
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")


def open_gguf(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except (ValueError, OSError) as e:
        raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def gguf_model_config(reader: gguf.GGUFReader) -> ModelConfig:
    meta = {k: f.contents() for k, f in reader.fields.items() if k not in _SKIPPED_ARRAYS}
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    rope_freqs = next(
        (_dequantize(t).tolist() for t in reader.tensors if t.name == ROPE_FREQS), None
    )
    return ModelConfig.from_gguf(meta, shapes, rope_freqs)


def hf_name(name: str) -> str:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _BLOCK.fullmatch(name)
    if m is None or m.group(2) not in _BLOCK_NAMES:
        raise ValueError(f"unexpected GGUF tensor {name!r}")
    return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}.{m.group(3)}"


def _dequantize(t: gguf.ReaderTensor) -> torch.Tensor:
    # np.require: a float32 tensor comes back as a read-only view of the mapped file.
    w = np.require(gguf.quants.dequantize(t.data, t.tensor_type), requirements=["C", "W"])
    return torch.from_numpy(w).reshape(tuple(int(n) for n in reversed(t.shape)))


def unpermute(w: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Undo llama.cpp's per-head row interleave of q/k (weights and biases alike)."""
    return w.reshape(num_heads, -1, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_weights(reader: gguf.GGUFReader, cfg: ModelConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, float32 tensor) for every tensor, with a progress bar on stderr."""
    for t in tqdm(reader.tensors, desc="Dequantizing GGUF", unit="tensor", leave=False):
        if t.name == ROPE_FREQS:
            continue  # part of the config
        name = hf_name(t.name)
        w = _dequantize(t)
        if ".q_proj." in name:
            w = unpermute(w, cfg.num_heads)
        elif ".k_proj." in name:
            w = unpermute(w, cfg.num_kv_heads)
        yield name, w
