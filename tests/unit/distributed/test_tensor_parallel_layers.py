"""Tensor-parallel layers: a model sharded over two gloo ranks decodes as the whole model does."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_checkpoint import write_tiny_checkpoint
from tp_model_harness import run_sharded

from pagoda.engine.layers.linear import QKVParallelLinear

PROMPTS = [[5, 17, 42, 99, 123, 7], [250, 3, 3, 8], [11, 299, 64, 128, 200, 201, 202, 40, 1]]
STEPS = 6


@pytest.mark.parametrize(
    "shape",
    [
        # KV heads split over the ranks; an untied LM head; a vocabulary padded on each rank.
        {"num_key_value_heads": 2},
        # One KV head replicated on both ranks; Qwen2's q/k/v biases; tied embeddings.
        {
            "num_key_value_heads": 1,
            "architectures": ["Qwen2ForCausalLM"],
            "tie_word_embeddings": True,
        },
    ],
    ids=["kv-split", "kv-replicated-bias-tied"],
)
def test_tp2_greedy_equals_tp1(tmp_path, shape) -> None:
    folder = write_tiny_checkpoint(tmp_path / "tiny", **shape)
    whole_tokens, whole_logits = run_sharded(folder, PROMPTS, STEPS, tp=1)
    tokens, logits = run_sharded(folder, PROMPTS, STEPS, tp=2)
    assert tokens == whole_tokens
    for got, want in zip(logits, whole_logits):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-4)
    assert len({t for seq in tokens for t in seq[-STEPS:]}) > 3  # not one token repeated


def test_heads_not_divisible_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(
        "pagoda.engine.layers.linear.get_tensor_model_parallel_world_size", lambda: 2
    )
    with pytest.raises(
        ValueError, match="num_attention_heads 9 is not divisible by tensor_parallel_size 2"
    ):
        QKVParallelLinear(576, 64, 9, 3)


def test_per_head_kv_scales_follow_their_heads_over_two_ranks(tmp_path) -> None:
    """Scales far apart per head (one clips its keys at 0.448): a rank reading another rank's
    head's scale would change the tokens."""
    folder = write_tiny_checkpoint(tmp_path / "m")
    scales = {}
    for n in range(4):  # the tiny checkpoint's layers
        scales[f"model.layers.{n}.self_attn.k_scale"] = torch.tensor([1.0, 0.001])
        scales[f"model.layers.{n}.self_attn.v_scale"] = torch.tensor([0.002, 1.0])
    tensors = load_file(str(folder / "model.safetensors")) | scales
    save_file(tensors, str(folder / "model.safetensors"))
    prompts = [[5, 17, 42, 99, 123, 7], [250, 3, 3, 8]]
    whole_tokens, whole_logits = run_sharded(folder, prompts, 4, tp=1, kv_dtype=torch.float8_e4m3fn)
    tokens, logits = run_sharded(folder, prompts, 4, tp=2, kv_dtype=torch.float8_e4m3fn)
    assert tokens == whole_tokens
    for got, want in zip(logits, whole_logits, strict=True):
        assert torch.allclose(torch.tensor(got), torch.tensor(want), atol=1e-2)
    plain_tokens, _ = run_sharded(folder, prompts, 4, tp=1)  # a float32 cache: no scales
    assert plain_tokens != whole_tokens  # the scales matter here
