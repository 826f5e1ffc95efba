"""The HTTP endpoints. Each finds its engine by the request's `model` and hands off."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pagoda.engine.server.errors import APIError, error_response, parse_body
from pagoda.engine.server.prompts import check_token_ids, encode, render_chat
from pagoda.engine.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    ModelCard,
    ModelList,
    TokenizeRequest,
)
from pagoda.engine.server.serving_chat import create_chat_completion
from pagoda.engine.server.serving_completion import create_completion
from pagoda.engine.server.streams import ClientDisconnected

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM

router = APIRouter()


def engine_for(request: Request, model: str | None, for_generation: bool = False) -> AsyncLLM:
    """The engine serving `model`; None means the first one, as in vLLM."""
    engines: dict[str, AsyncLLM] = request.app.state.engines
    if model is None:
        engine = next(iter(engines.values()))
    else:
        engine = next((e for e in engines.values() if model in e.config.served_names), None)
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


async def generation(
    request: Request,
    body: ChatCompletionRequest | CompletionRequest,
    handler: Callable[[AsyncLLM, Any, Request], Awaitable[Response]],
) -> Response:
    engine = engine_for(request, body.model, for_generation=True)
    try:
        return await handler(engine, body, request)
    except ClientDisconnected:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await generation(
        request, await parse_body(request, ChatCompletionRequest), create_chat_completion
    )


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await generation(
        request, await parse_body(request, CompletionRequest), create_completion
    )


def model_card(engine: AsyncLLM, name: str) -> ModelCard:
    return ModelCard(id=name, root=engine.config.model, max_model_len=engine.max_model_len)


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    """One card per served name, as vLLM lists them."""
    engines = request.app.state.engines.values()
    cards = [model_card(e, name) for e in engines for name in e.config.served_names]
    return JSONResponse(ModelList(data=cards).model_dump())


@router.get("/v1/models/{model:path}")
async def retrieve_model(request: Request, model: str) -> JSONResponse:
    return JSONResponse(model_card(engine_for(request, model), model).model_dump())


@router.post("/tokenize")
async def tokenize(request: Request) -> JSONResponse:
    body = await parse_body(request, TokenizeRequest)
    engine = engine_for(request, body.model)
    if (body.prompt is None) == (body.messages is None):
        raise APIError(400, "Give exactly one of prompt or messages", param="prompt")
    if body.messages is not None:
        tokens = render_chat(engine.tokenizer, body.messages, body.add_generation_prompt)
    else:
        assert body.prompt is not None  # exactly one of the two, checked above
        tokens = encode(engine.tokenizer, body.prompt, body.add_special_tokens)
    return JSONResponse(
        {"count": len(tokens), "max_model_len": engine.max_model_len, "tokens": tokens}
    )


@router.post("/detokenize")
async def detokenize(request: Request) -> JSONResponse:
    body = await parse_body(request, DetokenizeRequest)
    engine = engine_for(request, body.model)
    tokens = check_token_ids(engine.tokenizer, body.tokens, param="tokens")
    return JSONResponse({"prompt": engine.tokenizer.decode(tokens)})


@router.get("/version")
async def show_version() -> JSONResponse:
    try:
        return JSONResponse({"version": version("pagoda")})
    except PackageNotFoundError:
        return JSONResponse({"version": "unknown"})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/health")
async def health(request: Request) -> Response:
    """200 only while every engine loop is alive and stepping: a wedged loop fails the probe."""
    sick = [name for name, e in request.app.state.engines.items() if not e.is_healthy()]
    if sick:
        return error_response(
            503, f"Engine loop not healthy: {', '.join(sick)}", code="engine_unhealthy"
        )
    return Response(status_code=200)
