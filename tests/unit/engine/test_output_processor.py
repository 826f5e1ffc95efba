"""The API side of the split: a stop string found by the output processor ends that sequence
alone, and the core frees it at once; the same through AsyncLLM (the core's loop apart), so both
paths give the same outputs."""

from __future__ import annotations

import asyncio

from block_ops_fake_runner import BlockOpsFakeRunner

from pagoda.engine.async_llm import AsyncLLM
from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.outputs import RequestOutput
from pagoda.engine.sampling_params import SamplingParams

PROMPT = [5, 6, 7]


class LetterTokenizer:
    """Token id i is the letter chr(97 + i % 26): text a test can cut by hand."""

    def decode(self, ids: list[int], **_) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def make_engine() -> LLMEngine:
    return LLMEngine(
        EngineConfig(block_size=4, max_model_len=64, max_num_seqs=4),
        runner=BlockOpsFakeRunner(32, 4),
        tokenizer=LetterTokenizer(),
        log_stats=False,
    )


def params(**kw) -> SamplingParams:
    return SamplingParams(**({"temperature": 0.0, "max_tokens": 12, "ignore_eos": True} | kw))


def generate(engine: LLMEngine, p: SamplingParams) -> RequestOutput:
    engine.add_request("r", PROMPT, p)
    done = []
    while engine.has_unfinished_requests():
        done += [o for o in engine.step() if o.finished]
    (out,) = done
    return out


def test_a_stop_string_ends_its_sequence_and_the_core_frees_it():
    engine = make_engine()
    full = generate(engine, params()).outputs[0].text
    assert len(full) == 12
    stop = full[4:6]
    out = generate(engine, params(stop=[stop])).outputs[0]
    assert (out.text, out.finish_reason, out.stop_reason) == (
        full[: full.index(stop)],
        "stop",
        stop,
    )
    assert not engine.core.requests, "the core forgot the request"
    assert engine.kv.num_free_blocks == engine.kv.num_blocks, "and freed its blocks"


def test_async_llm_gives_what_llm_engine_gives():
    p = params(n=3, seed=3, stop=["ch"])  # forks diverge: one of them stops at "ch"
    expected = generate(make_engine(), p)

    async def online() -> RequestOutput:
        llm = AsyncLLM.in_thread(make_engine())
        try:
            async for out in llm.generate(PROMPT, p, "r"):
                last = out
        finally:
            await llm.shutdown()
        return last

    got = asyncio.run(online())

    def fields(out: RequestOutput) -> list[tuple]:
        return [(o.text, o.token_ids, o.finish_reason, o.stop_reason) for o in out.outputs]

    assert fields(got) == fields(expected)
    assert {o.finish_reason for o in got.outputs} == {"stop", "length"}, "both ends are covered"
