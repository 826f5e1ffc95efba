"""Beam search through the engine (live beams as forked sequences sharing KV blocks) gives HF
transformers' `generate(num_beams=..., do_sample=False)` hypotheses on the default model."""

from __future__ import annotations

import pytest
import torch
from engine_harness import PreemptionCounter, run_to_completion

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
WIDTH, MAX_TOKENS = 3, 6


def make_engine(num_blocks: int) -> LLMEngine:
    return LLMEngine(
        EngineConfig(
            dtype="float32",
            max_model_len=64,
            max_num_batched_tokens=64,
            max_num_seqs=8,
            num_gpu_blocks_override=num_blocks,
        ),
        log_stats=False,
    )


@pytest.fixture(scope="module")
def hf_results() -> list[list[tuple[list[int], float]]]:
    """HF's hypotheses (tokens, score) per prompt."""
    from transformers import AutoModelForCausalLM

    from pagoda.engine.loader.resolve import default_gguf_path

    path = default_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    engine = make_engine(8)  # for its tokenizer and EOS ids
    return [hf_beams(model, engine.tokenize(p), sorted(engine.eos_token_ids)) for p in PROMPTS]


def hf_beams(model, prompt_ids: list[int], eos: list[int]) -> list[tuple[list[int], float]]:
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            num_beams=WIDTH,
            num_return_sequences=WIDTH,
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            length_penalty=1.0,
            early_stopping=False,
            eos_token_id=eos,
            pad_token_id=eos[0],
            return_dict_in_generate=True,
            output_scores=True,
        )
    results = []
    for seq, score in zip(out.sequences[:, ids.shape[1] :].tolist(), out.sequences_scores.tolist()):
        ends = [i for i, t in enumerate(seq) if t in eos]
        results.append((seq[: ends[0] + 1] if ends else seq, score))
    return results


@pytest.mark.parametrize(
    "num_blocks", [64, 5]
)  # 5: too few blocks for all beams, so beams are preempted
def test_beam_search_matches_hf(hf_results, num_blocks):
    engine = make_engine(num_blocks)
    preemptions = PreemptionCounter(engine)
    params = SamplingParams(n=WIDTH, use_beam_search=True, temperature=0.0, max_tokens=MAX_TOKENS)
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(str(i), prompt, SamplingParams(**vars(params)))
    outs = run_to_completion(engine)
    assert all(out.finished for out in outs), "beam search outputs only at the end"
    done = {int(out.request_id): out.outputs for out in outs}
    assert (preemptions.count > 0) == (num_blocks < 8)
    for i, prompt in enumerate(PROMPTS):
        want, got = hf_results[i], done[i]
        assert [o.token_ids for o in got] == [t for t, _ in want], prompt
        scores = [o.cumulative_logprob / len(o.token_ids) for o in got]
        assert scores == pytest.approx([s for _, s in want], abs=1e-3)
    # An abort mid-search frees every live beam's blocks.
    engine.add_request("abort", PROMPTS[0], SamplingParams(**vars(params)))
    for _ in range(3):
        engine.step()
    assert len(engine.requests["abort"].seqs) == WIDTH
    out = engine.abort_request("abort")
    assert out.finished and {o.finish_reason for o in out.outputs} == {"abort"}
    assert (
        engine.kv.num_free_blocks == engine.kv.num_blocks and not engine.has_unfinished_requests()
    )
