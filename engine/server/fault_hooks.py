"""Fault injection for the integration and e2e tests, installed only when PAGODA_TEST_HOOKS=1.

A route stops an engine's core process from the outside, as a hung step would, so that a test can
watch /health fail, the requests in flight end and the server exit non-zero; no public API should
offer this. (A crash needs no hook: a test kills the core process by its pid.)

PAGODA_TEST_TTFT_DELAY_S makes every request's first token that many seconds late, in the
metrics as for the client: a revision a rollout gate must find too slow. It is an env var, not a
route, so that it is part of a pod's spec (a revision) and holds from the pod's first request.
"""

from __future__ import annotations

import math
import os
import signal
from typing import TYPE_CHECKING, cast

from fastapi import APIRouter, FastAPI, Request, Response

from pagoda.engine.server.routes import engine_for

if TYPE_CHECKING:
    from pagoda.engine.async_llm import AsyncLLM
    from pagoda.engine.core_client import CoreProcess

TTFT_DELAY_ENV = "PAGODA_TEST_TTFT_DELAY_S"

router = APIRouter(prefix="/debug")


def install(app: FastAPI, engines: dict[str, AsyncLLM]) -> None:
    """The /debug routes, and the first-token delay of TTFT_DELAY_ENV on every engine.

    ValueError (a one-line CLI error) when the delay is not a finite number of seconds >= 0."""
    raw = os.environ.get(TTFT_DELAY_ENV, "")
    try:
        delay = float(raw or 0)
    except ValueError:
        delay = math.nan
    if not (math.isfinite(delay) and delay >= 0):
        raise ValueError(f"{TTFT_DELAY_ENV} must be a number of seconds >= 0, got {raw!r}")
    for llm in engines.values():
        llm.first_token_delay_s = delay
    app.include_router(router)


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
