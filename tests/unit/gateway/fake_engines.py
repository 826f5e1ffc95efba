"""Stand-in engines for the gateway's unit tests: tiny aiohttp servers on loopback that answer
like `pagoda serve` (a JSON completion naming the engine, or a slow SSE stream) and record what
they saw, including a client that went away."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web
from aiohttp.test_utils import TestServer

from pagoda.gateway.registry import Endpoint


class FakeEngine:
    def __init__(self, name: str, chunk_delay: float = 0.0, answer_delay: float = 0.0) -> None:
        self.name, self.chunk_delay, self.answer_delay = name, chunk_delay, answer_delay
        self.bodies: list[dict] = []
        self.disconnected = asyncio.Event()
        self.die_mid_stream = False
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_post("/v1/completions", self._complete)
        self.server = TestServer(app, host="127.0.0.1", handler_cancellation=True)

    async def start(self) -> FakeEngine:
        await self.server.start_server()
        return self

    async def close(self) -> None:
        await self.server.close()

    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, "127.0.0.1", self.server.port)

    async def _complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        if not body.get("stream"):
            try:
                await asyncio.sleep(self.answer_delay)
            except asyncio.CancelledError:
                self.disconnected.set()
                raise
            return web.json_response({"engine": self.name, "model": body["model"]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(body.get("max_tokens", 3)):
                chunk = {
                    "id": "chatcmpl-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
                    "i": i,
                    "engine": self.name,
                }
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
                if self.die_mid_stream and i == 0:
                    request.transport.close()
                    return response
                await asyncio.sleep(self.chunk_delay)
            await response.write(b"data: [DONE]\n\n")
        except asyncio.CancelledError:
            self.disconnected.set()
            raise
        return response
