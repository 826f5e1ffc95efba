"""vLLM's offline API: prompt forms mixed in one generate call, get_tokenizer, chat's arguments,
and the output objects' field names (a tiny random model over the default model's vocabulary)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from pagoda.engine.llm import LLM
from pagoda.engine.outputs import CompletionOutput, RequestOutput
from pagoda.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=4, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    folder = tmp_path_factory.mktemp("tiny")
    (folder / "config.json").write_text(
        json.dumps(
            dict(
                vocab_size=49152,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=256,
                eos_token_id=2,
            )
        )
    )
    return LLM(
        model=str(folder),
        load_format="dummy",
        device="cpu",
        max_num_seqs=8,
        kv_cache_memory_bytes=16 << 20,
    )


def test_prompt_forms_mixed_in_one_call(llm):
    ids = llm.get_tokenizer()("Hello there").input_ids
    outs = llm.generate(
        ["Hello there", ids, {"prompt": "Hello there"}, {"prompt_token_ids": ids}],
        sampling_params=GREEDY,
    )
    assert [o.prompt_token_ids for o in outs] == [ids] * 4
    assert len({tuple(o.outputs[0].token_ids) for o in outs}) == 1
    assert [o.prompt for o in outs] == ["Hello there", None, "Hello there", None]
    [one] = llm.generate({"prompt_token_ids": ids}, GREEDY)
    assert one.outputs[0].token_ids == outs[0].outputs[0].token_ids
    with pytest.raises(TypeError, match="prompt_token_ids"):
        llm.generate({"text": "x"}, GREEDY)


def test_chat_takes_vllm_arguments(llm):
    template = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    template += "{% if add_generation_prompt %}[assistant]{% endif %}"
    [out] = llm.chat(
        [{"role": "user", "content": "hi"}],
        GREEDY,
        chat_template=template,
        add_generation_prompt=True,
    )
    assert llm.get_tokenizer().decode(out.prompt_token_ids) == "[user] hi\n[assistant]"


def test_output_fields_have_vllm_names():
    assert {
        "request_id",
        "prompt",
        "prompt_token_ids",
        "prompt_logprobs",
        "outputs",
        "finished",
        "num_cached_tokens",
        "metrics",
    } <= {f.name for f in fields(RequestOutput)}
    assert {
        "index",
        "text",
        "token_ids",
        "cumulative_logprob",
        "logprobs",
        "finish_reason",
        "stop_reason",
    } <= {f.name for f in fields(CompletionOutput)}


def test_prompt_logprobs_in_the_output(llm):
    [out] = llm.generate("The capital of France", SamplingParams(max_tokens=1, prompt_logprobs=1))
    assert out.prompt_logprobs is not None
    assert len(out.prompt_logprobs) == len(out.prompt_token_ids)
    assert out.prompt_logprobs[0] is None
    for token, step in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:]):
        assert step is not None and token in step and len(step) <= 2
