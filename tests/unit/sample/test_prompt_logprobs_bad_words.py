"""prompt_logprobs equal HF transformers' log-softmax at every prompt position (through chunked
prefill, and again when the prompt's blocks are cached); bad_words ban single tokens always and a
multi-token word's last token where the output ends with the rest of it, as vLLM does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_checkpoint import write_tiny_checkpoint, write_tiny_tokenizer

from pagoda.engine.llm import LLM
from pagoda.engine.sample.bad_words import bad_words_token_ids, banned_by_bad_words
from pagoda.engine.sampling_params import ParamError, SamplingParams

PROMPT = [5, 17, 42, 99, 3, 8, 8, 120, 44, 7, 61, 250, 9, 13, 77, 31, 2, 19, 64, 88, 5]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_tokenizer(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def llm(tiny: Path) -> LLM:
    return LLM(
        str(tiny),
        dtype="float32",
        device="cpu",
        max_num_seqs=4,
        max_num_batched_tokens=8,  # the prompt is computed in three chunks
        num_gpu_blocks_override=64,
    )


def test_prompt_logprobs_match_hf(tiny: Path, llm: LLM) -> None:
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    with torch.inference_mode():
        want = hf(torch.tensor([PROMPT])).logits[0].float().log_softmax(dim=-1)
    params = SamplingParams(max_tokens=2, temperature=0.0, prompt_logprobs=3)
    for _ in range(2):  # the second time the prompt's blocks are cached: no hit may be taken
        [out] = llm.generate({"prompt_token_ids": PROMPT}, params)
        got = out.prompt_logprobs
        assert got is not None and len(got) == len(PROMPT) and got[0] is None
        for pos, step in enumerate(got[1:], start=1):
            assert step is not None
            top = want[pos - 1].topk(3)
            expected = dict(zip(top.indices.tolist(), top.values.tolist()))
            expected.setdefault(PROMPT[pos], want[pos - 1, PROMPT[pos]].item())
            assert step.keys() == expected.keys()
            for token, lp in expected.items():
                assert step[token] == pytest.approx(lp, abs=1e-4)
    [plain] = llm.generate({"prompt_token_ids": PROMPT}, SamplingParams(max_tokens=2))
    assert plain.prompt_logprobs is None


def test_prompt_logprobs_bounded_by_max_logprobs(llm: LLM) -> None:
    with pytest.raises(ParamError, match="prompt_logprobs"):
        llm.generate("t5 t6", SamplingParams(prompt_logprobs=21))


def test_bad_words_token_sequences(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny))
    assert bad_words_token_ids(tok, ["t5", "t7 t9"]) == [[5], [7, 9]]
    assert banned_by_bad_words([[5], [7, 9]], []) == {5}
    assert banned_by_bad_words([[5], [7, 9]], [3, 7]) == {5, 9}
    assert banned_by_bad_words([[5], [7, 9]], [7, 3]) == {5}


def test_bad_words_change_greedy_output(llm: LLM) -> None:
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    [free] = llm.generate({"prompt_token_ids": PROMPT}, greedy)
    tokens = free.outputs[0].token_ids
    first = tokens[0]
    banned = SamplingParams(
        max_tokens=12, temperature=0.0, ignore_eos=True, bad_words=[f"t{first}"]
    )
    [out] = llm.generate({"prompt_token_ids": PROMPT}, banned)
    assert first not in out.outputs[0].token_ids
    # A two-token word: its second token may come, only not right after its first.
    a, b = tokens[2], tokens[3]
    pair = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, bad_words=[f"t{a} t{b}"])
    [out] = llm.generate({"prompt_token_ids": PROMPT}, pair)
    got = out.outputs[0].token_ids
    assert got[:3] == tokens[:3] and got[3] != b
    assert all((x, y) != (a, b) for x, y in zip(got, got[1:]))
