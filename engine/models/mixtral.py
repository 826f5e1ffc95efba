"""Mixtral: the Llama block with a sparse mixture-of-experts MLP (block_sparse_moe: a router
`gate` and experts w1/w2/w3, top-k routing renormalized). Qwen3-MoE builds on the same parts."""

from __future__ import annotations

import re

import torch
from torch import nn

from pagoda.engine.layers.linear import ReplicatedLinear
from pagoda.engine.layers.moe import SHARDS, FusedMoE
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.models.llama import LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP

# model.layers.N.<mlp>.experts.E.<w1|w2|w3|gate_proj|up_proj|down_proj>.weight
_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+)\.weight")
_EXPERT_SHARD = {
    "w1": "w1",
    "w3": "w3",
    "w2": "w2",
    "gate_proj": "w1",
    "up_proj": "w3",
    "down_proj": "w2",
}


class SparseMoeBlock(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = ReplicatedLinear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = FusedMoE(
            cfg.num_experts,
            cfg.num_experts_per_tok,
            cfg.hidden_size,
            cfg.moe_intermediate_size,
            renormalize=cfg.norm_topk_prob,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.experts(x, self.gate(x))


class MixtralDecoderLayer(LlamaDecoderLayer):
    def make_mlp(self, cfg: ModelConfig, layer_idx: int) -> nn.Module:
        if layer_idx in cfg.mlp_only_layers:
            return LlamaMLP(cfg)
        return SparseMoeBlock(cfg)


class MixtralForCausalLM(LlamaForCausalLM):
    """Our MoE block is `mlp` in every family; Mixtral's checkpoints call it block_sparse_moe."""

    layer_cls = MixtralDecoderLayer

    def checkpoint_target(self, name: str) -> tuple[str, tuple | None]:
        name = name.replace(".block_sparse_moe.", ".mlp.")
        m = _EXPERT.fullmatch(name)
        if m is None:
            return super().checkpoint_target(name)
        shard = _EXPERT_SHARD[m.group(3)]
        param = "w2_weight" if shard == "w2" else "w13_weight"
        return f"{m.group(1)}.{param}", (int(m.group(2)), shard)

    def expected_loads(self, params: dict[str, nn.Parameter]) -> set[tuple[str, tuple | None]]:
        experts = {n for n in params if n.endswith((".experts.w13_weight", ".experts.w2_weight"))}
        expected = super().expected_loads({n: p for n, p in params.items() if n not in experts})
        for name in experts:
            shards = ("w2",) if name.endswith("w2_weight") else SHARDS[:2]
            n = params[name].shape[0]
            expected |= {(name, (e, s)) for e in range(n) for s in shards}
        return expected
