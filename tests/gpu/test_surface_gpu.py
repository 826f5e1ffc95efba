"""The OpenAI-surface paths of the runner and sampler on a GPU (GPU tier): prompt logprobs and
embeddings in bf16 against the same engine in float32 on the CPU, bad words, and structured
outputs (the xgrammar bitmask applied on the device) under n > 1, preemption and async scheduling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

from engine_harness import PreemptionCounter, run_to_completion  # noqa: E402
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer  # noqa: E402

from pagoda.engine.config import EngineConfig  # noqa: E402
from pagoda.engine.llm import LLM  # noqa: E402
from pagoda.engine.llm_engine import LLMEngine  # noqa: E402
from pagoda.engine.sampling_params import SamplingParams  # noqa: E402
from pagoda.engine.structured.params import StructuredOutputsParams  # noqa: E402

PROMPT = [5, 17, 42, 99, 3, 8, 8, 120, 44, 7, 61, 250, 9, 13, 77, 31, 2, 19, 64, 88, 5]
SMALL = dict(max_num_seqs=4, max_num_batched_tokens=8, num_gpu_blocks_override=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def test_prompt_logprobs_on_the_gpu_match_the_cpu(tiny: Path) -> None:
    params = SamplingParams(max_tokens=2, temperature=0.0, prompt_logprobs=3)
    prompt = {"prompt_token_ids": PROMPT}
    [cpu] = LLM(str(tiny), dtype="float32", device="cpu", **SMALL).generate(prompt, params)
    gpu_llm = LLM(str(tiny), dtype="bfloat16", device="cuda", **SMALL)
    for _ in range(2):  # the second time the prompt's blocks are cached
        [gpu] = gpu_llm.generate(prompt, params)
        assert cpu.prompt_logprobs is not None and gpu.prompt_logprobs is not None
        assert len(gpu.prompt_logprobs) == len(PROMPT) and gpu.prompt_logprobs[0] is None
        for pos, (want, got) in enumerate(zip(cpu.prompt_logprobs[1:], gpu.prompt_logprobs[1:])):
            assert want is not None and got is not None
            token = PROMPT[pos + 1]
            assert got[token] == pytest.approx(want[token], rel=2e-2, abs=5e-2)  # bf16


def test_embeddings_on_the_gpu_match_the_cpu(tiny: Path) -> None:
    prompts = [{"prompt_token_ids": p} for p in (PROMPT, [7] * 40, list(range(3, 60)))]
    kw = dict(runner="pooling", **SMALL)
    cpu = LLM(str(tiny), dtype="float32", device="cpu", **kw).embed(prompts)
    gpu = LLM(str(tiny), dtype="bfloat16", device="cuda", **kw).embed(prompts)
    for a, b in zip(cpu, gpu):
        x, y = torch.tensor(a.outputs.embedding), torch.tensor(b.outputs.embedding)
        assert F.cosine_similarity(x, y, dim=0).item() > 0.999
        assert abs(y.norm().item() - 1.0) < 1e-3


def test_bad_words_on_the_gpu(tiny: Path) -> None:
    llm = LLM(str(tiny), dtype="bfloat16", device="cuda", **SMALL)
    greedy = dict(max_tokens=12, temperature=0.0, ignore_eos=True)
    [free] = llm.generate({"prompt_token_ids": PROMPT}, SamplingParams(**greedy))
    first = free.outputs[0].token_ids[0]
    banned = SamplingParams(**greedy, bad_words=[f"t{first}"])
    [out] = llm.generate({"prompt_token_ids": PROMPT}, banned)
    assert first not in out.outputs[0].token_ids


SCHEMA = {
    "type": "object",
    "properties": {
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
    },
    "required": ["color", "size", "tags"],
}


def test_json_schema_on_the_gpu_with_n_preemption_and_async_scheduling(tmp_path: Path) -> None:
    """Random weights over the default model's vocabulary: only the grammar makes the text valid."""
    carried = Path(".devcarry/tokenizer")  # the default model's, on the lent GPU machine
    (tmp_path / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=49152,
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=512,
                eos_token_id=2,
            )
        )
    )
    config = EngineConfig(
        load_format="dummy",
        model=str(tmp_path),
        tokenizer=str(carried) if carried.exists() else None,
        device="cuda",
        max_model_len=256,
        max_num_seqs=8,
        max_num_batched_tokens=128,
        num_gpu_blocks_override=16,  # 256 token slots for 8 seqs of ~80: preempts
        async_scheduling=True,
        enable_prefix_caching=True,
    )
    engine = LLMEngine(config, log_stats=False)
    preemptions = PreemptionCounter(engine)
    params = SamplingParams(
        n=2,
        temperature=1.0,
        seed=7,
        max_tokens=120,
        structured_outputs=StructuredOutputsParams(json=SCHEMA),
    )
    prefix = "Shared instructions, long enough to fill whole KV blocks of the prefix cache. " * 3
    for i in range(4):
        engine.add_request(f"r{i}", prefix + f"Item {i}.", params)
    outs = [c for o in run_to_completion(engine) if o.finished for c in o.outputs]
    assert len(outs) == 8 and preemptions.count > 0
    for out in outs:
        assert out.finish_reason == "stop", out
        value = json.loads(out.text)
        assert value["color"] in ("red", "green", "blue") and isinstance(value["size"], int)
        assert len(value["tags"]) <= 3 and all(isinstance(t, bool) for t in value["tags"])
