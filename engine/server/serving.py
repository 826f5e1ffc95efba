"""What chat and completions share: sampling parameters from a request, usage, the final output."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from pagoda.engine.outputs import RequestOutput
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.server.errors import APIError
from pagoda.engine.server.prompts import check_token_ids
from pagoda.engine.server.protocol import PromptTokensDetails, SamplingFields, Usage
from pagoda.engine.server.streams import merge
from pagoda.engine.server.structured import structured_outputs

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM


def sampling_params(
    engine: AsyncLLM, body: SamplingFields, max_tokens: int, logprobs: int | None
) -> SamplingParams:
    if body.n > engine.config.max_num_seqs:
        raise APIError(
            400,
            f"n must be at most max_num_seqs ({engine.config.max_num_seqs}), got {body.n}",
            param="n",
        )
    if logprobs is not None and logprobs > engine.config.max_logprobs:
        raise APIError(
            400,
            f"logprobs: at most {engine.config.max_logprobs} (--max-logprobs), got {logprobs}",
            param="top_logprobs" if hasattr(body, "top_logprobs") else "logprobs",
        )
    if body.use_beam_search and body.stream:
        raise APIError(400, "use_beam_search cannot stream: beams end together", param="stream")
    try:
        params = body.sampling_params(max_tokens, logprobs)
    except ValueError as e:
        raise APIError(
            400, str(e), param=str(e).split(" ", 1)[0]
        ) from None  # messages start with the field
    check_token_ids(engine.tokenizer, params.stop_token_ids, param="stop_token_ids")
    check_token_ids(engine.tokenizer, list(params.logit_bias or {}), param="logit_bias")
    check_token_ids(engine.tokenizer, params.allowed_token_ids or [], param="allowed_token_ids")
    params.structured_outputs = structured_outputs(engine, body)
    return params


def check_priority(engine: AsyncLLM, priority: int) -> None:
    if priority != 0 and engine.config.scheduling_policy != "priority":
        raise APIError(
            400,
            "priority needs the server started with --scheduling-policy priority",
            param="priority",
        )


async def generate_all(
    engine: AsyncLLM,
    prompts: list[list[int]],
    params: SamplingParams,
    request_id: str,
    priority: int,
    cache_salt: str | None = None,
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """Outputs of one engine request per prompt, tagged with the prompt's index.

    The engine requests start on the first iteration, not before, so that a response that is never
    iterated (the client left first) leaves nothing running in the engine.
    """
    ids = [request_id] if len(prompts) == 1 else [f"{request_id}-{i}" for i in range(len(prompts))]
    merged = merge(
        [
            engine.generate(p, params, rid, priority=priority, cache_salt=cache_salt)
            for p, rid in zip(prompts, ids)
        ],
        alive=engine.is_healthy,
    )
    try:
        async for item in merged:
            yield item
    finally:
        await merged.aclose()


async def collect(
    outputs: AsyncGenerator[tuple[int, RequestOutput], None], n: int
) -> list[RequestOutput]:
    """The final output of each of n requests."""
    finals: list[RequestOutput | None] = [None] * n
    try:
        async for i, out in outputs:
            finals[i] = out
    finally:
        await outputs.aclose()
    done = [f for f in finals if f is not None]
    if len(done) < n:
        raise RuntimeError("the engine ended a request without any output")
    return done


def continuous_usage(body: SamplingFields, outs: list[RequestOutput | None]) -> Usage | None:
    """Usage so far for a streamed chunk, when stream_options.continuous_usage_stats asks."""
    if body.stream_options is None or not body.stream_options.continuous_usage_stats:
        return None
    return usage([o for o in outs if o is not None])


def usage(finals: list[RequestOutput]) -> Usage:
    prompt = sum(len(f.prompt_token_ids) for f in finals)
    completion = sum(len(o.token_ids) for f in finals for o in f.outputs)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=PromptTokensDetails(
            cached_tokens=sum(f.num_cached_tokens for f in finals)
        ),
    )
