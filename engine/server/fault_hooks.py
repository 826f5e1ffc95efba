"""Fault injection for the integration tests, mounted only when PAGODA_TEST_HOOKS=1.

They break the engine loop from the inside so that a test can watch /health fail; they reach
into AsyncLLM's loop (its engine's `has_unfinished_requests`, called on every turn of the loop
thread) because no public API should offer this.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

from fastapi import APIRouter, Request, Response

from pagoda.engine.server.routes import engine_for

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM

router = APIRouter(prefix="/debug")
_never = threading.Event()


@router.post("/engine/{model:path}/kill")
async def kill_loop(request: Request, model: str) -> Response:
    """The loop thread raises at its next turn and dies."""
    llm = cast("AsyncLLM", engine_for(request, model))  # serve() mounts these over AsyncLLMs

    def die() -> bool:
        raise RuntimeError("engine loop killed by the test hook")

    llm.engine.has_unfinished_requests = die  # type: ignore[method-assign]
    return Response(status_code=204)


@router.post("/engine/{model:path}/wedge")
async def wedge_loop(request: Request, model: str, health_timeout_s: float = 2.0) -> Response:
    """The loop thread blocks for good at its next turn; /health notices after health_timeout_s."""
    llm = cast("AsyncLLM", engine_for(request, model))  # serve() mounts these over AsyncLLMs
    llm.health_timeout_s = health_timeout_s
    llm.engine.has_unfinished_requests = _never.wait  # type: ignore[method-assign]
    return Response(status_code=204)
