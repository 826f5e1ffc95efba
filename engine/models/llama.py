"""The Llama block (also Mistral, and Qwen2 with its q/k/v bias) over the paged KV cache.

Input is the runner's flattened batch: [T] token ids and positions, one AttentionMetadata; each
layer's attention writes its K/V into that layer's (k_cache, v_cache) and reads its context there.
Weights load by HF checkpoint names (model.layers.N.self_attn.q_proj.weight ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.engine.attention import AttentionBackend, AttentionMetadata
from pagoda.engine.layers.activation import SiluAndMul
from pagoda.engine.layers.embedding import VocabEmbedding
from pagoda.engine.layers.linear import Linear, MergedLinear
from pagoda.engine.layers.norm import RMSNorm
from pagoda.engine.layers.rotary import RotaryEmbedding
from pagoda.engine.models.config import ModelConfig

KVCache = tuple[torch.Tensor, torch.Tensor]

# HF checkpoint name part -> (our merged parameter's name part, shard)
MERGED = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", "gate"),
    "up_proj": ("gate_up_proj", "up"),
}


class LlamaAttention(nn.Module):
    def __init__(
        self, cfg: ModelConfig, backend: AttentionBackend, rotary: RotaryEmbedding
    ) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
        )
        self.q_size, self.kv_size = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        self.scale = cfg.head_dim**-0.5
        self.qkv_proj = MergedLinear(
            cfg.hidden_size,
            {"q": self.q_size, "k": self.kv_size, "v": self.kv_size},
            bias=cfg.attention_bias,
        )
        self.o_proj = Linear(self.q_size, cfg.hidden_size)
        self.rotary = rotary
        self.backend = backend

    def forward(
        self, positions: torch.Tensor, x: torch.Tensor, kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        self.rotary(positions, q, k)
        out = self.backend.forward(q, k, v, *kv_cache, meta, self.scale)
        return self.o_proj(out.reshape(-1, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        size = cfg.intermediate_size
        self.gate_up_proj = MergedLinear(cfg.hidden_size, {"gate": size, "up": size})
        self.act = SiluAndMul()
        self.down_proj = Linear(size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(
        self, cfg: ModelConfig, backend: AttentionBackend, rotary: RotaryEmbedding
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg, backend, rotary)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(
        self,
        positions: torch.Tensor,
        x: torch.Tensor,
        residual: torch.Tensor | None,
        kv_cache: KVCache,
        meta: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The residual stream is carried apart from x so each norm can fuse the add before it.
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x = self.self_attn(positions, x, kv_cache, meta)
        x, residual = self.post_attention_layernorm(x, residual)
        return self.mlp(x), residual


class LlamaModel(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: AttentionBackend) -> None:
        super().__init__()
        self.embed_tokens = VocabEmbedding(cfg.vocab_size, cfg.hidden_size)
        # One cos/sin table for all layers (Llama 3.1's is 64 MiB).
        rotary = RotaryEmbedding(
            cfg.head_dim, cfg.max_position_embeddings, cfg.rope_theta, cfg.rope_scaling
        )
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(cfg, backend, rotary) for _ in range(cfg.num_layers)
        )
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        x, residual = self.embed_tokens(input_ids), None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            x, residual = layer(positions, x, residual, kv_cache, meta)
        return self.norm(x, residual)[0]


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg: ModelConfig, backend: AttentionBackend) -> None:
        super().__init__()
        self.config = cfg
        self.model = LlamaModel(cfg, backend)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(cfg.hidden_size, cfg.vocab_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        """[T] ids and positions of the flattened batch -> final hidden states [T, hidden]."""
        return self.model(input_ids, positions, kv_caches, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, hidden] -> float32 logits [N, vocab]."""
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(hidden, weight).float()

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the parameters; every parameter must be given, whole."""
        params = dict(self.named_parameters())
        expected = set()
        for name in params:
            module = self.get_submodule(name.rsplit(".", 1)[0])
            shards = module.shard_rows if isinstance(module, MergedLinear) else [None]
            expected |= {(name, shard) for shard in shards}
        loaded = set()
        for name, tensor in weights:
            if name == "lm_head.weight" and self.lm_head is None:
                continue  # some tied checkpoints still store the shared table
            if name.endswith("rotary_emb.inv_freq"):
                continue  # old HF checkpoints saved this buffer; we compute it
            *prefix, part, kind = name.split(".")
            merged, shard = MERGED.get(part, (part, None))
            target = ".".join([*prefix, merged, kind])
            if target not in params:
                raise KeyError(f"checkpoint tensor {name!r} has no place in the model")
            if shard is None:
                if params[target].shape != tensor.shape:
                    raise ValueError(
                        f"{name}: model expects {tuple(params[target].shape)}, "
                        f"checkpoint has {tuple(tensor.shape)}"
                    )
                params[target].copy_(tensor)
            else:
                cast(MergedLinear, self.get_submodule(".".join([*prefix, merged]))).load_shard(
                    params[target], shard, tensor
                )
            loaded.add((target, shard))
        if expected - loaded:
            missing = sorted(f"{n}[{s}]" if s else n for n, s in expected - loaded)
            raise ValueError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}")
