"""Mixture-of-experts MLP: top-k routing over experts stored as two stacked weights.

vLLM's FusedMoE layout: w13_weight [E, 2 * I, H] holds each expert's gate (w1) rows then its up
(w3) rows, w2_weight [E, H, I] its down projection. Under tensor parallelism every rank holds all
experts, each cut along I (columns of w13, rows of w2), and the partial outputs are all-reduced.
The PyTorch path here is the reference and the CPU's; on a GPU, engine/kernels/fused_moe.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pagoda.engine.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_reduce,
)
from pagoda.engine.kernels.fused_moe import fused_moe
from pagoda.engine.layers.linear import divide
from pagoda.engine.layers.weights import LoadedWeight, copy_checked, narrow, set_weight_loader

SHARDS = ("w1", "w3", "w2")  # gate, up, down (Mixtral's names; Qwen3-MoE's map onto them)


def select_experts(
    router_logits: torch.Tensor, top_k: int, renormalize: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [T, k] in dtype, expert ids [T, k]): softmax over all experts in float32, the
    top k, renormalized to sum to 1 if asked (as HF's Mixtral and Qwen3-MoE)."""
    probs = torch.softmax(router_logits, dim=-1, dtype=torch.float32)
    weights, ids = probs.topk(top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights.to(dtype), ids


def fused_moe_reference(
    x: torch.Tensor,
    w13: torch.Tensor,
    w2: torch.Tensor,
    weights: torch.Tensor,
    ids: torch.Tensor,
) -> torch.Tensor:
    """sum over each token's k experts of weight * w2(silu(w1 x) * w3 x), expert by expert."""
    out = torch.zeros_like(x)
    for expert in ids.unique().tolist():
        tokens, slot = (ids == expert).nonzero(as_tuple=True)
        gate, up = F.linear(x[tokens], w13[expert]).chunk(2, dim=-1)
        y = F.linear(F.silu(gate) * up, w2[expert])
        # index_put_: index_add_'s CPU kernel stalls on a busy machine (see lora/ops.py)
        out.index_put_((tokens,), y * weights[tokens, slot, None], accumulate=True)
    return out


class FusedMoE(nn.Module):
    def __init__(
        self,
        num_experts: int,
        top_k: int,
        hidden_size: int,
        intermediate_size: int,
        renormalize: bool,
    ) -> None:
        super().__init__()
        self.tp_rank = get_tensor_model_parallel_rank()
        self.tp_size = get_tensor_model_parallel_world_size()
        self.num_experts, self.top_k, self.renormalize = num_experts, top_k, renormalize
        self.intermediate_size = intermediate_size
        size = divide(intermediate_size, self.tp_size, "moe intermediate size")
        self.intermediate_size_per_partition = size
        self.w13_weight = nn.Parameter(torch.empty(num_experts, 2 * size, hidden_size))
        self.w2_weight = nn.Parameter(torch.empty(num_experts, hidden_size, size))
        set_weight_loader(self.w13_weight, self.weight_loader)
        set_weight_loader(self.w2_weight, self.weight_loader)

    def weight_loader(
        self, param: nn.Parameter, loaded: LoadedWeight, expert_id: int, shard_id: str
    ) -> None:
        """One expert's w1, w3 ([I, H]) or w2 ([H, I]) from the checkpoint: this rank's slice."""
        size = self.intermediate_size_per_partition
        start = self.tp_rank * size
        what = f"expert {expert_id} {shard_id}"
        if shard_id == "w2":
            copy_checked(param.data[expert_id], narrow(loaded, 1, start, size), what)
        else:
            rows = param.data[expert_id].narrow(0, 0 if shard_id == "w1" else size, size)
            copy_checked(rows, narrow(loaded, 0, start, size), what)

    def forward(self, x: torch.Tensor, router_logits: torch.Tensor) -> torch.Tensor:
        weights, ids = select_experts(router_logits, self.top_k, self.renormalize, x.dtype)
        moe = fused_moe if x.is_cuda else fused_moe_reference
        out = moe(x, self.w13_weight, self.w2_weight, weights, ids)
        return tensor_model_parallel_all_reduce(out) if self.tp_size > 1 else out
