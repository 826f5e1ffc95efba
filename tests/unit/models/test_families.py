"""Each model family: a tiny random config saved by transformers itself, loaded by Pagoda; its
logits equal HF's in float32 on the CPU, and its greedy tokens equal HF's for 32 steps under
continuous batching with preemption (sequences longer than the sliding windows, so they count)."""

from __future__ import annotations

import pytest
import torch
from engine_harness import PreemptionCounter, run_to_completion
from tiny_hf import hf_model
from tiny_models import IDS, assert_same_logits

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.loader import load_model
from pagoda.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [IDS, IDS[:7], [5, 9, 300, 301, 2, 7, 11, 500, 42, 43, 44, 45, 3], IDS[::-1] + IDS[:5]]
STEPS = 32

LONGROPE = {
    "rope_type": "longrope",
    "short_factor": [1.0 + 0.1 * i for i in range(8)],
    "long_factor": [2.0 + 0.5 * i for i in range(8)],
}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
MOE = {"num_experts_per_tok": 2}

FAMILIES = {
    "llama3.2-tied": ("LlamaForCausalLM", {"tie_word_embeddings": True}),
    "qwen2-yarn": ("Qwen2ForCausalLM", {"rope_scaling": YARN}),
    "qwen3": ("Qwen3ForCausalLM", {"head_dim": 32}),
    "mistral-sliding": ("MistralForCausalLM", {"sliding_window": 6}),
    "gemma2": (
        "Gemma2ForCausalLM",
        {"head_dim": 16, "sliding_window": 5, "query_pre_attn_scalar": 24, "num_hidden_layers": 3},
    ),
    "gemma3": (
        "Gemma3ForCausalLM",
        {
            "head_dim": 16,
            "sliding_window": 5,
            "query_pre_attn_scalar": 24,
            "num_hidden_layers": 3,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        },
    ),
    "phi3-longrope": (
        "Phi3ForCausalLM",
        {
            "pad_token_id": 0,
            "max_position_embeddings": 1024,
            "original_max_position_embeddings": 256,
            "rope_scaling": LONGROPE,
            "sliding_window": 7,
        },
    ),
    # Phi-4-mini: RoPE over 3/4 of each head (12 of 16 dims, a half of 6), tied embeddings
    "phi4-mini-partial": (
        "Phi3ForCausalLM",
        {
            "pad_token_id": 0,
            "max_position_embeddings": 1024,
            "original_max_position_embeddings": 256,
            "partial_rotary_factor": 0.75,
            "rope_scaling": {k: v[:6] if k.endswith("factor") else v for k, v in LONGROPE.items()},
            "tie_word_embeddings": True,
        },
    ),
    "mixtral": ("MixtralForCausalLM", {**MOE, "num_local_experts": 4}),
    "qwen3-moe": (
        "Qwen3MoeForCausalLM",
        {**MOE, "num_experts": 4, "moe_intermediate_size": 32, "mlp_only_layers": [1]},
    ),
}


def load(folder, **engine) -> tuple:
    return load_model(EngineConfig(model=str(folder), **engine), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_hf(tmp_path, family: str) -> None:
    arch, overrides = FAMILIES[family]
    hf = hf_model(arch, **overrides)
    hf.save_pretrained(tmp_path)
    # Phi-3 within its original context: LongRoPE's short factors, as HF's for short inputs.
    ours, cfg = load(tmp_path, max_model_len=256 if arch == "Phi3ForCausalLM" else None)
    assert cfg.architecture == arch
    assert_same_logits(ours, cfg, hf, IDS)
    assert greedy_under_preemption(tmp_path) == [hf_greedy(hf, p) for p in PROMPTS]


def hf_greedy(hf, prompt: list[int]) -> list[int]:
    """HF's argmax, one full forward a step (no cache: nothing of HF's generate in the way)."""
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(STEPS):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def greedy_under_preemption(folder) -> list[list[int]]:
    """All prompts in one engine whose KV cache holds about half of them: requests are
    preempted (recomputed) and resumed as the batch runs."""
    config = EngineConfig(
        model=str(folder),
        device="cpu",
        dtype="float32",
        max_model_len=64,
        block_size=4,
        num_gpu_blocks_override=32,
        max_num_seqs=4,
        max_num_batched_tokens=24,  # prompts in chunks too
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    preemptions = PreemptionCounter(engine)
    params = SamplingParams(
        max_tokens=STEPS,
        temperature=0.0,
        ignore_eos=True,
        detokenize=False,
        output_kind="final_only",
    )
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, params)
    outputs = {o.request_id: o.outputs[0].token_ids for o in run_to_completion(engine)}
    assert preemptions.count > 0
    return [list(outputs[str(i)]) for i in range(len(PROMPTS))]


def test_longrope_long_factors(tmp_path) -> None:
    """A context past the original one takes the long factors for every position (vLLM); HF
    takes them for an input that long, so a 300-token input agrees."""
    arch, overrides = FAMILIES["phi3-longrope"]
    hf = hf_model(arch, **overrides)
    hf.save_pretrained(tmp_path)
    ours, cfg = load(tmp_path)
    assert cfg.max_model_len is None and cfg.max_position_embeddings == 1024
    assert_same_logits(ours, cfg, hf, [(i * 37) % 512 for i in range(300)], atol=2e-4)
