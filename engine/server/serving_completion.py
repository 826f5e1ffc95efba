"""POST /v1/completions: one engine request per prompt, choices numbered prompt * n + output."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from pagoda.engine.outputs import CompletionOutput, RequestOutput, TokenLogprobs
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError
from pagoda.engine.server.logprobs import completion_logprobs, prompt_logprobs
from pagoda.engine.server.prompts import completion_prompts, off_loop
from pagoda.engine.server.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    now,
)
from pagoda.engine.server.serving import (
    check_priority,
    collect,
    continuous_usage,
    generate_all,
    sampling_params,
    usage,
)
from pagoda.engine.server.streams import (
    SSE_DONE,
    DrainCut,
    sse,
    sse_error,
    until_disconnected,
)


async def create_completion(
    engine: EngineClient, body: CompletionRequest, request: Request
) -> Response:
    tokenizer = engine.tokenizer
    prompts = await off_loop(
        completion_prompts, tokenizer, engine.limits.max_model_len, body.prompt
    )
    if body.stream and body.prompt_logprobs is not None:
        raise APIError(400, "prompt_logprobs are not available when streaming", param="stream")
    params = sampling_params(engine, body, prompts, body.max_tokens, body.logprobs)
    if body.echo and body.logprobs is not None and params.prompt_logprobs is None:
        params.prompt_logprobs = body.logprobs  # the echoed prompt's logprobs, as vLLM's
    check_priority(engine, body.priority)
    request_id = f"cmpl-{uuid.uuid4().hex}"
    cut = request.app.state.lifecycle.cut
    outputs = generate_all(
        engine,
        prompts,
        params,
        request_id,
        body.priority,
        cut,
        body.cache_salt,
        request.state.lora_request,
    )
    echoes = [tokenizer.decode(p) if body.echo else "" for p in prompts]
    if body.stream:
        return StreamingResponse(
            stream_chunks(
                engine, body, request_id, request.state.model_name, outputs, prompts, echoes
            ),
            media_type="text/event-stream",
        )
    finals = await until_disconnected(request, collect(outputs, len(prompts)))
    choices = []
    for i, final in enumerate(finals):
        echo_ids, echo_steps = echoed(body, prompts[i], final)
        for o in final.outputs:
            c = choice(
                engine,
                body,
                i,
                o,
                echoes[i] + o.text,
                echo_ids + o.token_ids,
                echo_steps + list(o.logprobs or []),
                0,
            )
            if body.prompt_logprobs is not None:
                c.prompt_logprobs = prompt_logprobs(tokenizer, final.prompt_logprobs or [])
            choices.append(c)
    response = CompletionResponse(
        id=request_id, model=request.state.model_name, choices=choices, usage=usage(finals)
    )
    return JSONResponse(response.model_dump())


def echoed(
    body: CompletionRequest, prompt: list[int], out: RequestOutput
) -> tuple[list[int], list[TokenLogprobs | None]]:
    """The prompt's tokens and logprobs that lead a choice's logprobs under echo (none without)."""
    if not body.echo or body.logprobs is None:
        return [], []
    return prompt, list(out.prompt_logprobs or [])


def choice(
    engine: EngineClient,
    body: CompletionRequest,
    prompt_index: int,
    o: CompletionOutput,
    text: str,
    ids: list[int],
    steps: list[TokenLogprobs | None],
    offset: int,
) -> CompletionChoice:
    logprobs = None
    if body.logprobs is not None:
        logprobs = completion_logprobs(engine.tokenizer, ids, steps, body.logprobs, offset)
    return CompletionChoice(
        index=prompt_index * body.n + o.index,
        text=text,
        logprobs=logprobs,
        finish_reason=o.finish_reason,
        stop_reason=o.stop_reason,
    )


async def stream_chunks(
    engine: EngineClient,
    body: CompletionRequest,
    request_id: str,
    name: str,
    outputs: AsyncGenerator[tuple[int, RequestOutput], None],
    prompts: list[list[int]],
    echoes: list[str],
) -> AsyncGenerator[str, None]:
    created, num_prompts = now(), len(prompts)
    finished: set[int] = set()
    # Tokens and characters sent so far per choice: the output's own lists may already hold more,
    # since the engine thread goes on appending to them while this chunk is written.
    sent_tokens: dict[int, int] = {}
    sent_chars: dict[int, int] = {}
    finals: list[RequestOutput | None] = [None] * num_prompts
    try:
        async for i, out in outputs:
            finals[i] = out
            choices = []
            for o, (text, ids) in zip(out.outputs, out.deltas):
                c = i * body.n + o.index
                if c in finished or not (text or ids or o.finished):
                    continue
                done, offset = sent_tokens.get(c, 0), sent_chars.get(c, 0)
                echo = echoes[i] if done == 0 else ""
                echo_ids, echo_steps = echoed(body, prompts[i], out) if done == 0 else ([], [])
                steps = echo_steps + list((o.logprobs or [])[done : done + len(ids)])
                choices.append(
                    choice(engine, body, i, o, echo + text, echo_ids + ids, steps, offset)
                )
                sent_tokens[c], sent_chars[c] = done + len(ids), offset + len(echo) + len(text)
                if o.finished:
                    finished.add(c)
            if choices:
                yield sse(
                    CompletionResponse(
                        id=request_id,
                        created=created,
                        model=name,
                        choices=choices,
                        usage=continuous_usage(body, finals),
                    )
                )
        if body.stream_options and body.stream_options.include_usage and all(finals):
            yield sse(
                CompletionResponse(
                    id=request_id,
                    created=created,
                    model=name,
                    choices=[],
                    usage=usage([f for f in finals if f is not None]),
                )
            )
    except DrainCut:
        open_choices = [
            CompletionChoice(index=c, text="", finish_reason="abort")
            for c in range(num_prompts * body.n)
            if c not in finished
        ]
        yield sse(
            CompletionResponse(id=request_id, created=created, model=name, choices=open_choices)
        )
    except Exception as e:
        yield sse_error(e)
    finally:
        await outputs.aclose()
    yield SSE_DONE
