"""Requests held for a model with no Ready pod (scaled to zero, or between pods), per model.

A bounded number wait; one more is refused at once (429). A held request waits for the model's
`ready` event up to a timeout (then 503); when the gateway shuts down every held request is
answered 503 at once, so a restarting replica never leaves a client hanging.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from pagoda.gateway.errors import GatewayError
from pagoda.gateway.registry import Backend


class Hold:
    def __init__(self, bound: int, timeout: float, wake: Callable[[Backend], Awaitable[None]]):
        self.bound, self.timeout, self._wake = bound, timeout, wake
        self._held: dict[str, int] = {}
        self._closing = asyncio.Event()

    def depth(self, model: str) -> int:
        return self._held.get(model, 0)

    async def until_ready(self, b: Backend) -> None:
        """Return once `b` has a Ready pod; raise GatewayError (429 / 503) when it will not."""
        if b.endpoints:
            return
        if self._closing.is_set():
            raise _restarting()
        if self.depth(b.model) >= self.bound:
            raise GatewayError(
                429,
                f"Too many requests are waiting for model {b.model!r} to get a ready replica "
                f"(at most {self.bound}); retry later",
                code="queue_full",
                retry_after=max(1, round(self.timeout / 4)),
            )
        self._held[b.model] = self.depth(b.model) + 1
        try:
            if b.scales_to_zero:
                await self._wake(b)
            ready = asyncio.ensure_future(b.ready.wait())
            closing = asyncio.ensure_future(self._closing.wait())
            done, pending = await asyncio.wait(
                {ready, closing}, timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
            for t in pending:
                t.cancel()
            if ready in done and b.endpoints:
                return
            if closing in done:
                raise _restarting()
            raise GatewayError(
                503,
                f"Model {b.model!r} has no ready replica after {self.timeout:g}s"
                + (" (it is starting from zero)" if b.scales_to_zero else ""),
                code="no_ready_replica",
                retry_after=max(1, round(self.timeout / 2)),
            )
        finally:
            self._held[b.model] -= 1

    def close(self) -> None:
        self._closing.set()


def _restarting() -> GatewayError:
    return GatewayError(
        503,
        "The gateway is shutting down; this request was not sent to any model; retry it",
        code="gateway_restarting",
        retry_after=1,
    )
