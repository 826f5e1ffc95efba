"""Outputs with LoRA adapters equal HF transformers + PEFT with the adapter merged: random adapters
of rank 8 and 64 (one rsLoRA, one on the attention only) in one batch with the base model, on two
families; and again with one slot and one CPU cache entry, so requests wait for the slot and
adapters are evicted and read back between them."""

from __future__ import annotations

import pytest
import torch
from engine_harness import run_to_completion
from peft_adapters import merged, write_adapter
from tiny_hf import hf_model

from pagoda.engine import LoRARequest
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [[1, 57, 300, 4, 99, 511, 17, 8], [5, 9, 300, 301, 2, 7, 11, 500, 42, 43], [3, 4, 5]]
STEPS = 12


def hf_greedy(hf, prompt: list[int]) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(STEPS):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def engine_greedy(folder, requests: list[tuple[list[int], LoRARequest | None]], **kw) -> list:
    config = EngineConfig(
        model=str(folder),
        device="cpu",
        dtype="float32",
        max_model_len=64,
        block_size=4,
        num_gpu_blocks_override=64,
        enable_lora=True,
        max_lora_rank=64,
        **kw,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    params = SamplingParams(
        max_tokens=STEPS,
        temperature=0.0,
        ignore_eos=True,
        detokenize=False,
        output_kind="final_only",
    )
    for i, (prompt, lora) in enumerate(requests):
        engine.add_request(str(i), prompt, params, lora_request=lora)
    outputs = {o.request_id: list(o.outputs[0].token_ids) for o in run_to_completion(engine)}
    return [outputs[str(i)] for i in range(len(requests))]


@pytest.fixture(scope="module", params=["LlamaForCausalLM", "Qwen2ForCausalLM"])
def family(request, tmp_path_factory):
    """(base folder, base HF model, three adapters and their merged HF models)."""
    root = tmp_path_factory.mktemp(request.param)
    hf = hf_model(request.param)
    hf.save_pretrained(root / "base")
    specs = [
        ("r8", 8, {}),
        ("r64-rslora", 64, {"use_rslora": True}),
        ("r8-attention", 8, {"targets": ["q_proj", "v_proj", "o_proj"]}),
    ]
    adapters = []
    for i, (name, rank, extra) in enumerate(specs):
        folder = write_adapter(hf, root / name, rank, seed=i, **extra)
        adapters.append((LoRARequest(name, i + 1, str(folder)), merged(hf, folder)))
    return root / "base", hf, adapters


def test_mixed_batch_matches_merged_peft(family) -> None:
    base, hf, adapters = family
    requests, want = [], []
    for prompt in PROMPTS:  # every prompt under the base and under each adapter, interleaved
        for lora, model in [(None, hf), *adapters]:
            requests.append((prompt, lora))
            want.append(hf_greedy(model, prompt))
    assert engine_greedy(base, requests, max_loras=3) == want
    # The adapters change the output: the comparison is not of the base with itself.
    assert len({tuple(w) for w in want[:4]}) == 4


def test_one_slot_waits_evicts_and_reloads(family) -> None:
    base, hf, adapters = family
    requests = [(PROMPTS[i % 2], adapters[i % 3][0]) for i in range(6)] + [(PROMPTS[2], None)]
    want = [hf_greedy(adapters[i % 3][1], PROMPTS[i % 2]) for i in range(6)]
    want.append(hf_greedy(hf, PROMPTS[2]))
    assert engine_greedy(base, requests, max_loras=1, max_cpu_loras=1) == want


def test_offline_llm_api(family) -> None:
    """vLLM's form: LLM(enable_lora=True, ...).generate(prompts, params, lora_request=...), one
    adapter for all prompts or one (None: the base) per prompt."""
    from pagoda.engine import LLM
    from pagoda.engine.loader.resolve import default_gguf_path

    base, hf, adapters = family
    llm = LLM(
        model=str(base),
        tokenizer=str(default_gguf_path()),  # any tokenizer: the prompts are token ids
        device="cpu",
        dtype="float32",
        max_model_len=64,
        num_gpu_blocks_override=64,
        enable_lora=True,
        max_loras=2,
        max_lora_rank=64,
    )
    params = SamplingParams(max_tokens=STEPS, temperature=0.0, ignore_eos=True)
    prompts = [{"prompt_token_ids": p} for p in PROMPTS]
    (a, a_model), (b, b_model) = adapters[:2]
    outs = llm.generate(prompts, params, lora_request=[a, None, b])
    want = [
        hf_greedy(a_model, PROMPTS[0]),
        hf_greedy(hf, PROMPTS[1]),
        hf_greedy(b_model, PROMPTS[2]),
    ]
    assert [list(o.outputs[0].token_ids) for o in outs] == want
    outs = llm.generate(prompts[:1], params, lora_request=b)
    assert list(outs[0].outputs[0].token_ids) == hf_greedy(b_model, PROMPTS[0])
    with pytest.raises(ValueError, match="one LoRARequest, or one per prompt"):
        llm.generate(prompts, params, lora_request=[a])
