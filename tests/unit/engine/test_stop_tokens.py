"""A stop token id (or EOS) ends a sequence without entering its text, unless asked for."""

from __future__ import annotations

import pytest
from block_ops_fake_runner import BlockOpsFakeRunner, fake_token

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.loader.resolve import default_gguf_path
from pagoda.engine.sampling_params import ParamError, SamplingParams
from pagoda.engine.tokenizer import gguf_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return gguf_tokenizer(default_gguf_path())


def run(tokenizer, prompt: list[int], **params):
    engine = LLMEngine(
        EngineConfig(block_size=4, max_model_len=64),
        runner=BlockOpsFakeRunner(16, 4),
        tokenizer=tokenizer,
        log_stats=False,
    )
    engine.add_request("r", prompt, SamplingParams(temperature=0.0, **params))
    while engine.has_unfinished_requests():
        outs = engine.step()
    return outs[0].outputs[0]


def test_stop_token_text_is_left_out_unless_asked_for(tokenizer):
    # a prompt whose first fake token is an ordinary (non-special) token with visible text
    prompt = next(p for p in ([20 + i, 21, 22] for i in range(60)) if fake_token(p, None) >= 17)
    stop = fake_token(prompt, None)
    out = run(tokenizer, prompt, max_tokens=5, stop_token_ids=[stop])
    assert (out.finish_reason, out.stop_reason, out.token_ids, out.text) == (
        "stop",
        stop,
        [stop],
        "",
    )
    kept = run(
        tokenizer, prompt, max_tokens=5, stop_token_ids=[stop], include_stop_str_in_output=True
    )
    assert kept.text == tokenizer.decode([stop]) != ""
    # before min_tokens the stop token is an ordinary token
    early = run(tokenizer, prompt, max_tokens=3, min_tokens=3, stop_token_ids=[stop])
    assert early.finish_reason == "length" and early.text.startswith(tokenizer.decode([stop]))


def test_allowed_tokens_that_min_tokens_forbids_are_refused(tokenizer):
    """Only EOS or stop tokens allowed, under min_tokens: no token could be drawn (a 400)."""
    with pytest.raises(ParamError, match="allowed_token_ids"):
        run(
            tokenizer,
            [20, 21],
            max_tokens=4,
            min_tokens=1,
            allowed_token_ids=[7],
            stop_token_ids=[7],
        )
    run(tokenizer, [20, 21], max_tokens=2, min_tokens=1, allowed_token_ids=[7, 30])  # 30 is left
