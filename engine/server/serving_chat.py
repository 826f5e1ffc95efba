"""POST /v1/chat/completions: render the template, generate, answer whole or as SSE chunks."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request

from pagoda.engine.outputs import RequestOutput
from pagoda.engine.server.args import RequestPolicy
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError
from pagoda.engine.server.logprobs import chat_logprobs, prompt_logprobs
from pagoda.engine.server.prompts import check_template_kwargs, off_loop, render_chat
from pagoda.engine.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    DeltaMessage,
    DeltaToolCall,
    ToolCall,
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
from pagoda.engine.server.structured import check_structured_outputs
from pagoda.engine.server.tools.choice import ToolPlan, parameters, plan_tools
from pagoda.engine.structured.params import StructuredOutputsParams


async def create_chat_completion(
    engine: EngineClient, body: ChatCompletionRequest, request: Request
) -> Response:
    tokenizer = engine.tokenizer
    plan = plan_tools(body, getattr(request.app.state, "tool_call_parser", None))
    for tool in body.tools or []:
        check_structured_outputs(engine, StructuredOutputsParams(json=parameters(tool)), "tools")
    policy: RequestPolicy = request.app.state.policy
    check_template_kwargs(body.chat_template_kwargs, policy.trust_request_chat_template)
    prompt_ids = await off_loop(
        render_chat,
        tokenizer,
        engine.limits.max_model_len,
        body.messages,
        body.add_generation_prompt,
        body.chat_template_kwargs,
        [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None,
    )
    asked = body.max_tokens if body.max_completion_tokens is None else body.max_completion_tokens
    if body.stream and body.prompt_logprobs is not None:
        raise APIError(400, "prompt_logprobs are not available when streaming", param="stream")
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    top_k = body.top_logprobs or 0
    params = sampling_params(engine, body, [prompt_ids], asked, top_k if body.logprobs else None)
    if plan.constraint is not None:
        if params.structured_outputs is not None:
            raise APIError(
                400,
                f"tool_choice {plan.kind!r} does not combine with an output constraint",
                param="tool_choice",
            )
        params.structured_outputs = plan.constraint
    check_priority(engine, body.priority)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    cut = request.app.state.lifecycle.cut
    outputs = generate_all(
        engine, [prompt_ids], params, request_id, body.priority, cut, body.cache_salt
    )
    if body.stream:
        return StreamingResponse(
            stream_chunks(engine, body, request_id, outputs, top_k, plan),
            media_type="text/event-stream",
        )
    [final] = await until_disconnected(request, collect(outputs, 1))
    choices = []
    for o in final.outputs:
        content, calls, reason = plan.reply(o.text, o.finish_reason)
        choices.append(
            ChatChoice(
                index=o.index,
                message=AssistantMessage(content=content, tool_calls=calls),
                logprobs=chat_logprobs(tokenizer, o.token_ids, o.logprobs or [], top_k)
                if body.logprobs
                else None,
                finish_reason=reason,
                stop_reason=o.stop_reason,
            )
        )
    response = ChatCompletionResponse(
        id=request_id, model=engine.config.name, choices=choices, usage=usage([final])
    )
    if body.prompt_logprobs is not None:
        response.prompt_logprobs = prompt_logprobs(tokenizer, final.prompt_logprobs or [])
    return JSONResponse(response.model_dump())


async def stream_chunks(
    engine: EngineClient,
    body: ChatCompletionRequest,
    request_id: str,
    outputs: AsyncGenerator[tuple[int, RequestOutput], None],
    top_k: int,
    plan: ToolPlan,
) -> AsyncGenerator[str, None]:
    """Content as it comes; where tools may be called, each choice's reply whole at its end (its
    text decides between content and tool calls)."""
    created, name = now(), engine.config.name

    def chunk(choices: list[ChatChunkChoice], **kw: Any) -> str:
        return sse(
            ChatCompletionChunk(id=request_id, created=created, model=name, choices=choices, **kw)
        )

    yield chunk(
        [
            ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content=""))
            for i in range(body.n)
        ]
    )
    finished: set[int] = set()
    sent_tokens = [
        0
    ] * body.n  # not len(o.token_ids): the engine thread may have appended more since
    last = None
    try:
        async for _, out in outputs:
            last = out
            choices = []
            for o, (text, ids) in zip(out.outputs, out.deltas):
                if o.index in finished or not (text or ids or o.finished):
                    continue
                logprobs = None
                if body.logprobs:
                    done = sent_tokens[o.index]
                    logprobs = chat_logprobs(
                        engine.tokenizer, ids, (o.logprobs or [])[done : done + len(ids)], top_k
                    )
                sent_tokens[o.index] += len(ids)
                if plan.kind != "none":
                    if not o.finished:
                        continue
                    logprobs = (
                        chat_logprobs(engine.tokenizer, o.token_ids, o.logprobs or [], top_k)
                        if body.logprobs
                        else None
                    )
                    content, calls, reason = plan.reply(o.text, o.finish_reason)
                    delta = DeltaMessage(content=content, tool_calls=delta_calls(calls) or None)
                else:
                    delta, reason = DeltaMessage(content=text), o.finish_reason
                choices.append(
                    ChatChunkChoice(
                        index=o.index,
                        delta=delta,
                        logprobs=logprobs,
                        finish_reason=reason,
                        stop_reason=o.stop_reason,
                    )
                )
                if o.finished:
                    finished.add(o.index)
            if choices:
                yield chunk(choices, usage=continuous_usage(body, [out]))
        if body.stream_options and body.stream_options.include_usage and last is not None:
            yield chunk([], usage=usage([last]))
    except DrainCut:
        yield chunk(
            [
                ChatChunkChoice(index=i, delta=DeltaMessage(), finish_reason="abort")
                for i in range(body.n)
                if i not in finished
            ]
        )
    except Exception as e:
        yield sse_error(e)
    finally:
        await outputs.aclose()
    yield SSE_DONE


def delta_calls(calls: list[ToolCall]) -> list[DeltaToolCall]:
    """Whole calls as one streamed delta each, in OpenAI's chunk shape."""
    return [DeltaToolCall(index=i, id=c.id, function=c.function) for i, c in enumerate(calls)]
