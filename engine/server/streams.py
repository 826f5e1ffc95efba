"""Async plumbing between the engine's output streams and HTTP: merging, SSE, disconnects.

Stopping an engine stream early (a disconnect, a cancelled task) must abort the request so that
its KV blocks go back to the pool: every path here ends in `aclose()` on each engine stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from pagoda.engine.server.errors import APIError, as_api_error, error_body

log = logging.getLogger(__name__)
T = TypeVar("T")
HEALTH_POLL_S = 1.0


class ClientDisconnected(Exception):
    pass


class DrainCut(APIError):
    """The drain deadline passed with the request unfinished: a stream ends its open choices with
    finish_reason "abort", a whole response is this 503."""

    def __init__(self) -> None:
        super().__init__(
            503, "The server shut down before the request finished", code="shutting_down"
        )


async def merge(
    streams: list[AsyncGenerator[T, None]], alive: Callable[[], bool], cut: asyncio.Event
) -> AsyncGenerator[tuple[int, T], None]:
    """Items of several streams as they come, tagged with the stream's index.

    While nothing comes, `alive()` is asked every HEALTH_POLL_S: a dead or wedged engine ends the
    request with a 503 instead of leaving it open for ever. `cut` set (the drain's deadline)
    raises DrainCut.

    One task per stream feeds a queue and one watches the cut and the engine's health, so an item
    costs a queue hand-off, not a task and an asyncio.wait (a streamed token is one item: this is
    the API process's hottest path).
    """
    queue: asyncio.Queue[tuple[int, T] | BaseException | None] = asyncio.Queue()
    arrived = 0

    async def feed(i: int, stream: AsyncGenerator[T, None]) -> None:
        try:
            async for item in stream:
                queue.put_nowait((i, item))
        except Exception as e:  # the request's own failure, raised to the consumer
            queue.put_nowait(e)
        queue.put_nowait(None)

    async def watch() -> None:
        seen = arrived
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(cut.wait(), HEALTH_POLL_S)
                queue.put_nowait(DrainCut())
                return
            if seen == arrived and not alive():
                queue.put_nowait(
                    APIError(
                        503,
                        "The engine stopped stepping; the request was abandoned",
                        code="engine_unhealthy",
                    )
                )
                return
            seen = arrived

    feeders = [asyncio.ensure_future(feed(i, s)) for i, s in enumerate(streams)]
    watcher = asyncio.ensure_future(watch())
    try:
        open_streams = len(streams)
        while open_streams:
            got = await queue.get()
            if got is None:
                open_streams -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                arrived += 1
                yield got
    finally:
        for task in [*feeders, watcher]:
            task.cancel()
        await asyncio.gather(*feeders, watcher, return_exceptions=True)
        for s in streams:
            await s.aclose()


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first (non-streaming requests)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in (task, watcher):
            if not t.done():
                t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnected()
    return task.result()


def sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def sse_error(e: Exception) -> str:
    """Headers are gone once a stream has started: an error mid-stream is an event of its own."""
    err = as_api_error(e)
    if err.status == 500:
        log.exception("error mid-stream")
    return sse(error_body(err.status, err.message, err.param, err.code))
