"""The TTFT fault hook (PAGODA_TEST_TTFT_DELAY_S, engine/server/fault_hooks.py): every request's
first token comes that much later, and vllm:time_to_first_token_seconds, which the operator's
rollout gate reads, says so; without the hook the same engine answers at once."""

from __future__ import annotations

import time

import pytest
from block_ops_fake_runner import BlockOpsFakeRunner
from fastapi import FastAPI
from prometheus_client import REGISTRY

from pagoda.engine.async_llm import AsyncLLM
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.server.api_server import build_app
from pagoda.engine.server.fault_hooks import TTFT_DELAY_ENV, install

PARAMS = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True, detokenize=False)
DELAY = 0.4


def make_llm(name: str) -> AsyncLLM:
    engine = LLMEngine(
        EngineConfig(model=name, block_size=4, max_model_len=64, max_num_seqs=4),
        runner=BlockOpsFakeRunner(64, 4),
        tokenizer=object(),
        log_stats=False,
    )
    return AsyncLLM.in_thread(engine)  # its own metrics, under the served name `name`


def ttft(name: str) -> tuple[float, float]:
    """The histogram's (count, sum) for one served model."""
    labels = {"model_name": name, "engine": "0"}
    get = REGISTRY.get_sample_value
    return (
        get("vllm:time_to_first_token_seconds_count", labels) or 0.0,
        get("vllm:time_to_first_token_seconds_sum", labels) or 0.0,
    )


async def first_token_seconds(llm: AsyncLLM, rid: str) -> float:
    start = time.monotonic()
    async for out in llm.generate([5, 6, 7], PARAMS, rid):
        if out.outputs[0].token_ids:
            return time.monotonic() - start
    raise AssertionError("no token came")


@pytest.mark.parametrize("delay", [None, str(DELAY)])
async def test_the_hook_delays_the_first_token_in_the_metrics(monkeypatch, delay):
    name = f"ttft-hook-{delay}"
    if delay is not None:
        monkeypatch.setenv(TTFT_DELAY_ENV, delay)
    else:
        monkeypatch.delenv(TTFT_DELAY_ENV, raising=False)
    llm = make_llm(name)
    build_app({name: llm}, test_hooks=True)  # as `pagoda serve` with PAGODA_TEST_HOOKS=1
    try:
        seen = [await first_token_seconds(llm, f"r{i}") for i in range(2)]
    finally:
        await llm.shutdown()
    count, total = ttft(name)
    assert count == 2
    if delay is None:
        assert max(seen) < DELAY / 2 and total < DELAY / 2
    else:
        assert min(seen) >= DELAY and total >= 2 * DELAY
        assert total < 2 * DELAY + 1.0, "the delay, not more"


@pytest.mark.parametrize("raw", ["slow", "-1", "nan", "inf"])
def test_a_bad_delay_is_refused_naming_the_variable(monkeypatch, raw):
    monkeypatch.setenv(TTFT_DELAY_ENV, raw)
    with pytest.raises(ValueError, match=f"{TTFT_DELAY_ENV} must be a number of seconds >= 0"):
        install(FastAPI(), {})
