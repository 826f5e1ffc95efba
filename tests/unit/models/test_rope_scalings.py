"""Each RoPE scaling's frequencies and cos/sin factor against transformers' own functions."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from pagoda.engine.layers.rotary import RotaryEmbedding, inv_frequencies
from pagoda.engine.models.config import ModelConfig

HEAD_DIM, THETA, MAX_POS = 64, 10000.0, 2048
SCALINGS = {
    "linear": {"factor": 4.0},
    "dynamic": {"factor": 4.0},
    "llama3": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 512,
    },
    "yarn": {"factor": 4.0, "original_max_position_embeddings": 512, "beta_fast": 16},
    "longrope": {
        "short_factor": [1.0 + i / 32 for i in range(32)],
        "long_factor": [1.0 + i / 8 for i in range(32)],
        "original_max_position_embeddings": 512,
    },
}


def hf_frequencies(rope_type: str, seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    config = LlamaConfig(
        hidden_size=HEAD_DIM * 4,
        num_attention_heads=4,
        max_position_embeddings=MAX_POS,
        rope_parameters={"rope_type": rope_type, "rope_theta": THETA, **SCALINGS[rope_type]},
    )
    return ROPE_INIT_FUNCTIONS[rope_type](config, "cpu", seq_len=seq_len)


@pytest.mark.parametrize("rope_type", SCALINGS)
def test_frequencies_equal_hf(rope_type: str) -> None:
    scaling = {"rope_type": rope_type, **SCALINGS[rope_type]}
    # dynamic: vLLM's table is HF's at factor * max_position tokens; longrope: a context past the
    # original one takes the long factors, as HF's does for such a long input.
    seq_len = {"dynamic": MAX_POS * 4, "longrope": MAX_POS}.get(rope_type)
    want, want_scale = hf_frequencies(rope_type, seq_len)
    got, scale = inv_frequencies(HEAD_DIM, THETA, scaling, MAX_POS)
    torch.testing.assert_close(got, want.float())
    assert scale == pytest.approx(want_scale)


def test_table_covers_the_stretched_context_and_carries_the_scale() -> None:
    dynamic = RotaryEmbedding(HEAD_DIM, MAX_POS, THETA, {"rope_type": "dynamic", "factor": 4.0})
    assert dynamic.cos_sin_cache.shape == (MAX_POS * 4, HEAD_DIM)
    yarn = RotaryEmbedding(HEAD_DIM, MAX_POS, THETA, {"rope_type": "yarn", **SCALINGS["yarn"]})
    _, scale = hf_frequencies("yarn")
    assert scale > 1 and yarn.cos_sin_cache[0, 0].item() == pytest.approx(scale)
    longer = RotaryEmbedding(HEAD_DIM, MAX_POS, THETA, None, max_model_len=4096)
    assert longer.cos_sin_cache.shape[0] == 4096


def test_partial_rotary_rotates_the_first_dims_only() -> None:
    """partial_rotary_factor (Phi-4-mini's 0.75 of a 128-dim head: 96 dims) as HF reads it; the
    dims past rotary_dim pass through; an odd count is refused at start, naming the numbers."""
    phi4_mini = {
        "architectures": ["Phi3ForCausalLM"],
        "vocab_size": 512,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 2,
        "num_attention_heads": 24,
        "partial_rotary_factor": 0.75,
    }
    assert ModelConfig.from_hf(phi4_mini).rotary_dim == 96
    with pytest.raises(ValueError, match="RoPE over 91 of 128 head dims: it must be an even"):
        ModelConfig.from_hf({**phi4_mini, "partial_rotary_factor": 91 / 128})
    rotary = RotaryEmbedding(HEAD_DIM, MAX_POS, THETA, rotary_dim=HEAD_DIM // 2)
    q, k = torch.randn(3, 4, HEAD_DIM), torch.randn(3, 2, HEAD_DIM)
    q0, k0 = q.clone(), k.clone()
    rotary(torch.tensor([0, 5, 9])).apply(q, k)
    assert torch.equal(q[..., HEAD_DIM // 2 :], q0[..., HEAD_DIM // 2 :])
    assert torch.equal(k[..., HEAD_DIM // 2 :], k0[..., HEAD_DIM // 2 :])
    assert not torch.allclose(q[1:, :, : HEAD_DIM // 2], q0[1:, :, : HEAD_DIM // 2])
