"""POST /v1/embeddings: one pooling request per input, on an engine started with --runner pooling."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncGenerator

from fastapi.responses import JSONResponse, Response
from starlette.requests import Request

from pagoda.engine.outputs import PoolingRequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError
from pagoda.engine.server.prompts import completion_prompts, off_loop
from pagoda.engine.server.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from pagoda.engine.server.serving import check_priority
from pagoda.engine.server.streams import merge, until_disconnected


async def create_embedding(
    engine: EngineClient, body: EmbeddingRequest, request: Request
) -> Response:
    prompts = await input_prompts(engine, body)
    params = PoolingParams(dimensions=body.dimensions, normalize=body.normalize)
    check_priority(engine, body.priority)
    request_id = f"embd-{uuid.uuid4().hex}"
    ids = [request_id] if len(prompts) == 1 else [f"{request_id}-{i}" for i in range(len(prompts))]
    outputs = merge(
        [engine.encode(p, params, rid, body.priority) for p, rid in zip(prompts, ids)],
        alive=engine.is_healthy,
        cut=request.app.state.lifecycle.cut,
    )
    vectors = await until_disconnected(request, collect_vectors(outputs, len(prompts)))
    data = [
        EmbeddingData(index=i, embedding=encoded(v, body.encoding_format))
        for i, v in enumerate(vectors)
    ]
    tokens = sum(len(p) for p in prompts)
    response = EmbeddingResponse(
        id=request_id,
        model=request.state.model_name,
        data=data,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
    return JSONResponse(response.model_dump())


async def input_prompts(engine: EngineClient, body: EmbeddingRequest) -> list[list[int]]:
    """OpenAI's four input forms as token ids; errors name `input`."""
    try:
        return await off_loop(
            completion_prompts, engine.tokenizer, engine.limits.max_model_len, body.input
        )
    except APIError as e:
        if e.param == "prompt":
            e.param, e.message = "input", e.message.replace("prompt", "input")
        raise


async def collect_vectors(
    outputs: AsyncGenerator[tuple[int, PoolingRequestOutput], None], n: int
) -> list[PoolingRequestOutput]:
    finals: list[PoolingRequestOutput | None] = [None] * n
    try:
        async for i, out in outputs:
            finals[i] = out
    finally:
        await outputs.aclose()
    done = [f for f in finals if f is not None and f.outputs.data is not None]
    if len(done) != n:
        raise RuntimeError("the engine ended an embedding request without its vector")
    return done


def encoded(out: PoolingRequestOutput, encoding_format: str) -> list[float] | str:
    data = out.outputs.data
    assert data is not None, "collect_vectors keeps only outputs with their vector"
    if encoding_format == "base64":  # as OpenAI's and vLLM's: little-endian float32 bytes
        return base64.b64encode(data.numpy().astype("<f4").tobytes()).decode()
    values: list[float] = data.tolist()
    return values
