"""The HTTP endpoints. Each finds its engine by the request's `model` and hands off."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from pagoda.engine.request_rules import check_token_ids
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError, error_response, parse_body
from pagoda.engine.server.prompts import encode, off_loop, render_chat
from pagoda.engine.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
    SamplingFields,
    TokenizeRequest,
    TokenizeResponse,
    VersionResponse,
)
from pagoda.engine.server.serving_chat import create_chat_completion
from pagoda.engine.server.serving_completion import create_completion
from pagoda.engine.server.serving_embedding import create_embedding
from pagoda.engine.server.streams import ClientDisconnected

router = APIRouter()
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 404, 413, 429, 500, 503)
}
# One server-sent event (Open API 3.1 has `schema` of an event stream describe each event): its
# data is a chunk as JSON, or the last one's [DONE].
SSE = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
        }
    }
}


def answers(model: type[BaseModel], streams: bool = False) -> dict[int | str, dict[str, Any]]:
    """The responses an endpoint gives, for /openapi.json."""
    ok: dict[str, Any] = {"model": model}
    if streams:
        ok["content"] = SSE
    return {200: ok, **ERRORS}


RETRY_AFTER_S = 1  # a waiting request usually starts within a few steps of the batch


def engine_for(request: Request, model: str | None, for_generation: bool = False) -> EngineClient:
    """The engine serving `model`; None means the first one, as in vLLM."""
    engines: dict[str, EngineClient] = request.app.state.engines
    engine: EngineClient | None
    if model is None:
        engine = next(iter(engines.values()))
    else:
        engine = next((e for e in engines.values() if model in e.config.served_names), None)
        adapter = request.app.state.loras.adapters.get(model)
        if engine is None and adapter is not None:  # a LoRA adapter: its base model's engine
            engine = engines[adapter[0]]
    if engine is None:
        raise APIError(
            404,
            f"The model {model!r} does not exist; served: {', '.join(engines)}",
            param="model",
            code="model_not_found",
        )
    if for_generation and not engine.is_healthy():
        raise APIError(
            503,
            f"The engine of model {engine.config.name!r} is not healthy",
            code="engine_unhealthy",
        )
    return engine


Generation = TypeVar("Generation", bound=SamplingFields | EmbeddingRequest)
# vLLM's answers where the model's runner does not serve the endpoint (400).
NOT_SERVED = {
    "chat": "The model does not support Chat Completions API",
    "completions": "The model does not support Completions API",
    "embeddings": "The model does not support Embeddings API",
}


async def generation(
    request: Request,
    body: Generation,
    handler: Callable[[EngineClient, Generation, Request], Awaitable[Response]],
    api: str,
) -> Response:
    engine = engine_for(request, body.model, for_generation=True)
    adapter = request.app.state.loras.adapters.get(body.model)
    request.state.lora_request = None if adapter is None else adapter[1]
    # vLLM answers with the name the client asked for: an adapter's, or one of the served names.
    request.state.model_name = body.model or engine.config.name
    if engine.config.is_pooling != (api == "embeddings"):
        raise APIError(400, NOT_SERVED[api], param="model")
    limit = request.app.state.policy.max_waiting_requests
    if limit is not None and engine.num_waiting() >= limit:
        raise APIError(
            429,
            f"{engine.num_waiting()} requests already wait for model {engine.config.name!r}; "
            "retry later",
            code="too_many_requests",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )
    try:
        return await handler(engine, body, request)
    except ClientDisconnected:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it


@router.post("/v1/chat/completions", responses=answers(ChatCompletionResponse, streams=True))
async def chat_completions(request: Request) -> Response:
    return await generation(
        request, await parse_body(request, ChatCompletionRequest), create_chat_completion, "chat"
    )


@router.post("/v1/completions", responses=answers(CompletionResponse, streams=True))
async def completions(request: Request) -> Response:
    return await generation(
        request, await parse_body(request, CompletionRequest), create_completion, "completions"
    )


@router.post("/v1/embeddings", responses=answers(EmbeddingResponse))
async def embeddings(request: Request) -> Response:
    return await generation(
        request, await parse_body(request, EmbeddingRequest), create_embedding, "embeddings"
    )


def model_card(engine: EngineClient, name: str) -> ModelCard:
    return ModelCard(id=name, root=engine.config.model, max_model_len=engine.limits.max_model_len)


@router.get("/v1/models", responses=answers(ModelList))
async def list_models(request: Request) -> JSONResponse:
    """One card per served name, as vLLM lists them."""
    engines = request.app.state.engines
    cards = [model_card(e, name) for e in engines.values() for name in e.config.served_names]
    for name, (engine_name, lora) in request.app.state.loras.adapters.items():
        card = model_card(engines[engine_name], name)
        cards.append(card.model_copy(update={"root": lora.lora_path, "parent": engine_name}))
    return JSONResponse(ModelList(data=cards).model_dump())


@router.get("/v1/models/{model:path}", responses=answers(ModelCard))
async def retrieve_model(request: Request, model: str) -> JSONResponse:
    return JSONResponse(model_card(engine_for(request, model), model).model_dump())


@router.post("/tokenize", responses=answers(TokenizeResponse))
async def tokenize(request: Request) -> JSONResponse:
    body = await parse_body(request, TokenizeRequest)
    engine = engine_for(request, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "Give exactly one of prompt or messages", param="prompt")
    context = engine.limits.max_model_len
    if body.messages is not None:
        tokens = await off_loop(
            render_chat, engine.tokenizer, context, body.messages, body.add_generation_prompt
        )
    else:
        tokens = await off_loop(
            encode, engine.tokenizer, context, body.prompt, body.add_special_tokens
        )
    return JSONResponse(
        {"count": len(tokens), "max_model_len": engine.limits.max_model_len, "tokens": tokens}
    )


@router.post("/detokenize", responses=answers(DetokenizeResponse))
async def detokenize(request: Request) -> JSONResponse:
    body = await parse_body(request, DetokenizeRequest)
    engine = engine_for(request, body.model)
    check_token_ids("tokens", body.tokens, engine.limits.vocab_size)
    return JSONResponse({"prompt": engine.tokenizer.decode(body.tokens)})


@router.get("/version", responses=answers(VersionResponse))
async def show_version() -> JSONResponse:
    try:
        return JSONResponse({"version": version("pagoda")})
    except PackageNotFoundError:
        return JSONResponse({"version": "unknown"})


@router.get(
    "/metrics",
    response_class=PlainTextResponse,  # so the spec does not also promise JSON
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/health",
    response_class=Response,  # an empty 200: the spec must not promise a JSON body
    responses={200: {"description": "Every engine loop steps"}, 503: {"model": ErrorResponse}},
)
async def health(request: Request) -> Response:
    """200 only while every engine loop is alive and stepping: a wedged loop fails the probe."""
    sick = [name for name, e in request.app.state.engines.items() if not e.is_healthy()]
    if sick:
        return error_response(
            503, f"Engine loop not healthy: {', '.join(sick)}", code="engine_unhealthy"
        )
    return Response(status_code=200)
