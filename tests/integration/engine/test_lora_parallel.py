"""LoRA over two tensor-parallel worker processes (gloo on the CPU): the adapters shard with the
layers they wrap (B's rows on column-parallel layers, A's columns on row-parallel ones) and the
greedy tokens equal HF + PEFT's with each adapter merged, in one batch with the base model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from engine_harness import run_to_completion
from tiny_hf import hf_model

from pagoda.engine import LoRARequest
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "lora"))
from peft_adapters import merged, write_adapter
from test_lora_vs_peft import PROMPTS, STEPS, hf_greedy


@pytest.mark.timeout(300)
def test_tensor_parallel_lora_matches_merged_peft(tmp_path) -> None:
    hf = hf_model("LlamaForCausalLM")
    hf.save_pretrained(tmp_path / "base")
    loras = [
        LoRARequest(f"a{i}", i + 1, str(write_adapter(hf, tmp_path / f"a{i}", r, seed=i)))
        for i, r in enumerate([8, 64])
    ]
    models = [hf, *(merged(hf, lora.lora_path) for lora in loras)]
    config = EngineConfig(
        model=str(tmp_path / "base"),
        device="cpu",
        dtype="float32",
        max_model_len=64,
        block_size=4,
        num_gpu_blocks_override=64,
        enable_lora=True,
        max_loras=2,
        max_lora_rank=64,
        tensor_parallel_size=2,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    params = SamplingParams(
        max_tokens=STEPS,
        temperature=0.0,
        ignore_eos=True,
        detokenize=False,
        output_kind="final_only",
    )
    requests = [(p, i % 3) for p in PROMPTS for i in range(3)]
    try:
        for n, (prompt, which) in enumerate(requests):
            lora = None if which == 0 else loras[which - 1]
            engine.add_request(str(n), prompt, params, lora_request=lora)
        outputs = {o.request_id: list(o.outputs[0].token_ids) for o in run_to_completion(engine)}
    finally:
        engine.shutdown()
    want = [hf_greedy(models[which], prompt) for prompt, which in requests]
    assert [outputs[str(n)] for n in range(len(requests))] == want
