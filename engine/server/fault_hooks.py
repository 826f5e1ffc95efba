"""Fault injection for the integration tests, mounted only when PAGODA_TEST_HOOKS=1.

They stop an engine's core process from the outside, as a hung step would, so that a test can
watch /health fail, the requests in flight end and the server exit non-zero; no public API should
offer this. (A crash needs no hook: a test kills the core process by its pid.)
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, cast

from fastapi import APIRouter, Request, Response

from pagoda.engine.server.routes import engine_for

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM
    from pagoda.engine.core_client import CoreProcess

router = APIRouter(prefix="/debug")


def core_pid(request: Request, model: str) -> tuple[AsyncLLM, int]:
    llm = cast("AsyncLLM", engine_for(request, model))  # serve() mounts these over AsyncLLMs
    pid = cast("CoreProcess", llm.client).proc.pid
    assert pid is not None, "a started process"
    return llm, pid


@router.post("/engine/{model:path}/wedge")
async def wedge_core(request: Request, model: str, health_timeout_s: float = 2.0) -> Response:
    """The engine core process stops (SIGSTOP), as a hung step would; it is found silent after
    health_timeout_s."""
    llm, pid = core_pid(request, model)
    llm.health_timeout_s = health_timeout_s
    os.kill(pid, signal.SIGSTOP)
    return Response(status_code=204)
