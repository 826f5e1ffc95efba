"""--override-generation-config '{"max_new_tokens": N}': vLLM's server-side cap on max_tokens."""

from __future__ import annotations

import pytest
from block_ops_fake_runner import BlockOpsFakeRunner

from pagoda.engine import cli
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.loader.resolve import default_gguf_path
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.server import api_server
from pagoda.engine.tokenizer import gguf_tokenizer


def generated(max_new_tokens: int | None, **params) -> int:
    engine = LLMEngine(
        EngineConfig(
            block_size=4,
            max_model_len=32,
            override_generation_config=None
            if max_new_tokens is None
            else {"max_new_tokens": max_new_tokens},
        ),
        runner=BlockOpsFakeRunner(16, 4),
        tokenizer=gguf_tokenizer(default_gguf_path()),
        log_stats=False,
    )
    engine.add_request("r", [20, 21, 22], SamplingParams(ignore_eos=True, **params))
    while engine.has_unfinished_requests():
        outs = engine.step()
    return len(outs[0].outputs[0].token_ids)


def test_the_cap_is_the_least_of_the_request_the_room_and_max_new_tokens():
    assert generated(None, max_tokens=None) == 29  # the room left in the context
    assert generated(2, max_tokens=None) == 2
    assert generated(2, max_tokens=1) == 1
    assert generated(5, max_tokens=20) == 5
    assert generated(100, max_tokens=None) == 29


def test_the_flag_takes_vllm_json_and_refuses_other_keys(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(api_server, "run_server", lambda c, a: called.append(c) or 0)
    assert cli.main(["serve", "--override-generation-config", '{"max_new_tokens": 3}']) == 0
    assert called[0][0].max_new_tokens == 3
    for bad in ('{"temperature": 0.5}', '{"max_new_tokens": 0}', "not json"):
        with pytest.raises(SystemExit):
            cli.main(["serve", "--override-generation-config", bad])
        assert "override" in capsys.readouterr().err.strip().splitlines()[-1]
