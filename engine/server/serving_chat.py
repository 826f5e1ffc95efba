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
    DeltaFunction,
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
from pagoda.engine.server.tools.choice import ToolPlan, parameters, plan_tools, tool_call
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
        engine,
        [prompt_ids],
        params,
        request_id,
        body.priority,
        cut,
        body.cache_salt,
        request.state.lora_request,
    )
    if body.stream:
        return StreamingResponse(
            stream_chunks(engine, body, request_id, request.state.model_name, outputs, top_k, plan),
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
        id=request_id, model=request.state.model_name, choices=choices, usage=usage([final])
    )
    if body.prompt_logprobs is not None:
        response.prompt_logprobs = prompt_logprobs(tokenizer, final.prompt_logprobs or [])
    return JSONResponse(response.model_dump())


async def stream_chunks(
    engine: EngineClient,
    body: ChatCompletionRequest,
    request_id: str,
    name: str,
    outputs: AsyncGenerator[tuple[int, RequestOutput], None],
    top_k: int,
    plan: ToolPlan,
) -> AsyncGenerator[str, None]:
    """Content as it comes. A named tool's arguments stream as they come (the constrained text is
    them); where the text decides between content and tool calls (auto, required), each choice's
    reply comes at its end, in OpenAI's deltas: content, then per call a delta with its index, id,
    type and name, then one with its arguments; the finish_reason in a last empty delta."""
    created = now()

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
    called: dict[int, ToolCall] = {}  # a named tool's call, per choice, once its text begins
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
                if plan.kind == "named":  # the text is the arguments: they stream as they come
                    if o.index not in called and text:
                        called[o.index] = tool_call(plan.name or "", "")
                        yield chunk([call_header(o.index, 0, called[o.index])])
                    fragment = [arguments_delta(0, text)] if text else None
                    if fragment is None and not o.finished:
                        continue
                    delta = DeltaMessage(tool_calls=fragment)
                    reason = "tool_calls" if o.finish_reason == "stop" else o.finish_reason
                elif plan.kind != "none":
                    if not o.finished:
                        continue
                    logprobs = (
                        chat_logprobs(engine.tokenizer, o.token_ids, o.logprobs or [], top_k)
                        if body.logprobs
                        else None
                    )
                    content, calls, reason = plan.reply(o.text, o.finish_reason)
                    if content:
                        yield chunk(
                            [ChatChunkChoice(index=o.index, delta=DeltaMessage(content=content))]
                        )
                    for i, call in enumerate(calls):
                        yield chunk([call_header(o.index, i, call)])
                        yield chunk(
                            [
                                ChatChunkChoice(
                                    index=o.index,
                                    delta=DeltaMessage(
                                        tool_calls=[arguments_delta(i, call.function.arguments)]
                                    ),
                                )
                            ]
                        )
                    delta = DeltaMessage()
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


def call_header(choice: int, index: int, call: ToolCall) -> ChatChunkChoice:
    """A call's first delta: index, id, type, name, and arguments still empty (OpenAI's shape)."""
    header = DeltaToolCall(
        index=index,
        id=call.id,
        type="function",
        function=DeltaFunction(name=call.function.name, arguments=""),
    )
    return ChatChunkChoice(index=choice, delta=DeltaMessage(tool_calls=[header]))


def arguments_delta(index: int, fragment: str) -> DeltaToolCall:
    return DeltaToolCall(index=index, function=DeltaFunction(arguments=fragment))
