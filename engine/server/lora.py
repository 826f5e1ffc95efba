"""The served LoRA adapters: --lora-modules at start, POST /v1/load_lora_adapter and
/v1/unload_lora_adapter at runtime (behind the API key, as every /v1 route), vLLM's bodies and
answers. A request picks an adapter by naming it as `model`; /v1/models lists each with its base
model as `parent`.

Each load gets a fresh lora_int_id, so a name unloaded and loaded again is a new adapter to the
engine. Unloading takes the name out of service at once; requests already accepted keep their
adapter (its weights stay in the engine's slot pool and CPU cache, read again from its folder
if evicted) and finish as they started: nothing in flight changes.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from pagoda.engine.lora.modules import parse_lora_module
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.server.engine_client import EngineClient
from pagoda.engine.server.errors import APIError, parse_body
from pagoda.engine.server.protocol import ErrorResponse

router = APIRouter()
# vLLM answers these in plain text; errors in OpenAI's shape.
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
    **{status: {"model": ErrorResponse} for status in (400, 401, 404)},
}


class LoadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_path: str


class UnloadLoRAAdapterRequest(BaseModel):
    lora_name: str
    lora_int_id: int | None = None


@dataclass
class ServedLoRAs:
    # adapter name -> (the served name of the engine it runs on, its request)
    adapters: dict[str, tuple[str, LoRARequest]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def from_engines(cls, engines: Mapping[str, EngineClient]) -> ServedLoRAs:
        """Each engine's --lora-modules, checked against its model: ValueError at start."""
        served = cls()
        for engine_name, engine in engines.items():
            for item in engine.config.lora_modules or []:
                name, path = parse_lora_module(item)
                served.add(engine_name, engine, name, path)
        return served

    def add(self, engine_name: str, engine: EngineClient, name: str, path: str) -> LoRARequest:
        request = LoRARequest(name, next(self.ids), path)
        engine.check_lora(request)
        self.adapters[name] = (engine_name, request)
        return request


def base_engine(request: Request) -> tuple[str, EngineClient]:
    """The engine runtime loads go to: the first with --enable-lora."""
    engines: dict[str, EngineClient] = request.app.state.engines
    for name, engine in engines.items():
        if engine.config.enable_lora:
            return name, engine
    raise APIError(400, "LoRA adapters need the server started with --enable-lora")


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses=ANSWERS)
async def load_lora_adapter(request: Request) -> PlainTextResponse:
    body = await parse_body(request, LoadLoRAAdapterRequest)
    served: ServedLoRAs = request.app.state.loras
    engines: dict[str, EngineClient] = request.app.state.engines
    if body.lora_name in served.adapters or any(
        body.lora_name in e.config.served_names for e in engines.values()
    ):
        raise APIError(
            400,
            f"The lora adapter '{body.lora_name}' has already been loaded.",
            param="lora_name",
            code="InvalidUserInput",
        )
    name, engine = base_engine(request)
    try:
        await asyncio.to_thread(served.add, name, engine, body.lora_name, body.lora_path)
    except ValueError as e:
        raise APIError(400, str(e), param="lora_path", code="InvalidUserInput") from e
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse, responses=ANSWERS)
async def unload_lora_adapter(request: Request) -> PlainTextResponse:
    body = await parse_body(request, UnloadLoRAAdapterRequest)
    served: ServedLoRAs = request.app.state.loras
    if served.adapters.pop(body.lora_name, None) is None:
        raise APIError(
            404,
            f"The lora adapter '{body.lora_name}' cannot be found.",
            param="lora_name",
            code="NotFoundError",
        )
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
