"""A mixture-of-experts family sharded over two gloo ranks decodes as the whole model does: the
experts split along their intermediate size, the router replicated, Qwen3's q/k norms per head."""

from __future__ import annotations

import torch
from tiny_hf import hf_model
from tp_model_harness import run_sharded

PROMPTS = [[5, 17, 42, 99, 123, 7], [250, 3, 3, 8], [11, 299, 64, 128, 200, 201, 202, 40, 1]]
STEPS = 6


def test_qwen3_moe_tp2_equals_tp1(tmp_path) -> None:
    hf = hf_model(
        "Qwen3MoeForCausalLM",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        head_dim=32,
        mlp_only_layers=[1],
    )
    for p in hf.parameters():  # larger weights: clear greedy margins
        p.data.mul_(3)
    hf.save_pretrained(tmp_path)
    whole_tokens, whole_logits = run_sharded(tmp_path, PROMPTS, STEPS, tp=1)
    tokens, logits = run_sharded(tmp_path, PROMPTS, STEPS, tp=2)
    assert tokens == whole_tokens
    for got, want in zip(logits, whole_logits, strict=True):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
