"""What chat and completions share: sampling parameters from a request, usage, the final output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.outputs import RequestOutput
from pagoda.engine.request_rules import check_fan_out, check_request
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError
from pagoda.engine.server.protocol import PromptTokensDetails, SamplingFields, Usage
from pagoda.engine.server.streams import merge
from pagoda.engine.server.structured import structured_outputs


def sampling_params(
    engine: EngineClient,
    body: SamplingFields,
    prompts: list[list[int]],
    max_tokens: int | None,
    logprobs: int | None,
) -> SamplingParams:
    """The request's SamplingParams, checked against the engine's limits for every prompt before
    any response starts: ParamError (a 400 naming the parameter) otherwise."""
    if logprobs is not None and logprobs > engine.config.max_logprobs:
        raise APIError(
            400,
            f"logprobs: at most {engine.config.max_logprobs} (--max-logprobs), got {logprobs}",
            param="top_logprobs" if hasattr(body, "top_logprobs") else "logprobs",
        )
    if body.use_beam_search and body.stream:
        raise APIError(400, "use_beam_search cannot stream: beams end together", param="stream")
    params = body.sampling_params(max_tokens, logprobs, engine.default_sampling_params)
    params.structured_outputs = structured_outputs(engine, body)
    check_fan_out(len(prompts), params, engine.limits)
    for prompt in prompts:
        check_request(prompt, params, engine.limits)
    return params


def check_priority(engine: EngineClient, priority: int) -> None:
    if priority != 0 and engine.config.scheduling_policy != "priority":
        raise APIError(
            400,
            "priority needs the server started with --scheduling-policy priority",
            param="priority",
        )


async def generate_all(
    engine: EngineClient,
    prompts: list[list[int]],
    params: SamplingParams,
    request_id: str,
    priority: int,
    cut: asyncio.Event,
    cache_salt: str | None = None,
    lora_request: LoRARequest | None = None,
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """Outputs of one engine request per prompt, tagged with the prompt's index; DrainCut when
    `cut` is set (the drain's deadline).

    The engine requests start on the first iteration, not before, so that a response that is never
    iterated (the client left first) leaves nothing running in the engine.
    """
    ids = [request_id] if len(prompts) == 1 else [f"{request_id}-{i}" for i in range(len(prompts))]
    merged = merge(
        [
            engine.generate(
                p, params, rid, priority=priority, cache_salt=cache_salt, lora_request=lora_request
            )
            for p, rid in zip(prompts, ids)
        ],
        alive=engine.is_healthy,
        cut=cut,
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
    if len(done) != n:
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
