"""A failure while processing one request of a running batch ends that request alone; the engine
loop goes on and the batch's other requests finish as they would have without it."""

from __future__ import annotations

import asyncio

from block_ops_fake_runner import BlockOpsFakeRunner

from pagoda.engine.async_llm import AsyncLLM, RequestFailedError
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PARAMS = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, detokenize=False)
PROMPTS = {"a": [5, 6, 7], "b": [8, 9, 10, 11], "c": [12, 13]}


def make_engine() -> LLMEngine:
    return LLMEngine(
        EngineConfig(block_size=4, max_model_len=64, max_num_seqs=8),
        runner=BlockOpsFakeRunner(64, 4),
        tokenizer=object(),
        log_stats=False,
    )


def fail_on_token(engine: LLMEngine, request_id: str, at: int) -> None:
    """Make processing the at-th output token of `request_id` raise, inside the engine's step."""
    accept = engine.core._accept_token

    def faulty(req, seq, sampled, i, slot):
        if req.request_id == request_id and slot == at:
            raise RuntimeError("injected fault")
        return accept(req, seq, sampled, i, slot)

    engine.core._accept_token = faulty  # type: ignore[method-assign]


async def tokens_of(llm: AsyncLLM, rid: str) -> list[int] | Exception:
    try:
        async for out in llm.generate(PROMPTS[rid], PARAMS, rid):
            last = out
        return list(last.outputs[0].token_ids)
    except RequestFailedError as e:
        return e


async def test_a_failing_request_ends_alone_and_the_batch_goes_on():
    baseline = AsyncLLM.in_thread(make_engine())
    expected = await asyncio.gather(*(tokens_of(baseline, r) for r in PROMPTS))
    await baseline.shutdown()

    engine = make_engine()
    fail_on_token(engine, "b", at=3)
    llm = AsyncLLM.in_thread(engine)
    a, b, c = await asyncio.gather(*(tokens_of(llm, r) for r in PROMPTS))
    assert isinstance(b, RequestFailedError) and "b failed" in str(b)
    assert [a, c] == [expected[0], expected[2]] and len(a) == 12
    assert llm.is_healthy(), "the loop survived"
    assert engine.kv.num_free_blocks == engine.kv.num_blocks, "the failed request's blocks are back"
    again = await tokens_of(llm, "a")
    assert again == expected[0], "and it serves the next request"
    await llm.shutdown()
