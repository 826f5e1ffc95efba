"""The gateway's drain on loopback (the real app behind aiohttp's runner, stand-in engines): what
is still open at the drain's deadline ends with a reason, never silently."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp import web
from fake_engines import FakeEngine

from pagoda.gateway import drain
from pagoda.gateway.app import GatewaySettings, build
from pagoda.gateway.registry import Registry

DRAIN_S = 1.0


def events(text: str) -> list[str]:
    return [e.removeprefix("data: ") for e in text.split("\n\n") if e]


@pytest.mark.asyncio(loop_scope="session")
async def test_open_requests_end_with_a_reason_at_the_drain_deadline():
    engine = await FakeEngine("e-0", chunk_delay=0.1, answer_delay=30).start()
    registry = Registry()
    registry.upsert_isvc({"metadata": {"name": "m", "namespace": "ns"}, "spec": {"model": {}}})
    registry.lookup("m").set_slice("s", [engine.endpoint()])
    runner = web.AppRunner(
        build(GatewaySettings(drain_timeout=DRAIN_S), registry, None),
        handler_cancellation=True,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as client:

        async def ask(body: dict) -> tuple[int, str, float]:
            async with client.post("/v1/chat/completions", json=body) as r:
                text = await r.text()
                return r.status, text, time.monotonic()

        short = asyncio.ensure_future(ask(chat | {"stream": True, "max_tokens": 3}))
        long = asyncio.ensure_future(ask(chat | {"stream": True, "max_tokens": 600, "n": 2}))
        whole = asyncio.ensure_future(ask(chat))
        await asyncio.sleep(0.3)  # all three reached the engine; the long ones are under way
        stopped = time.monotonic()
        await runner.cleanup()  # what SIGTERM does: stop listening, drain, then end what is left
        (
            (s_status, s_text, _),
            (l_status, l_text, l_end),
            (w_status, w_text, w_end),
        ) = await asyncio.gather(short, long, whole)

    # The short stream finished inside the drain, as the engine sent it.
    assert s_status == 200 and events(s_text)[-1] == "[DONE]"
    assert "abort" not in s_text
    # The long stream: its tokens, then a chunk closing both choices with abort, then [DONE].
    assert l_status == 200
    *tokens, last, done = events(l_text)
    assert len(tokens) >= 5 and done == "[DONE]"
    last = json.loads(last)
    assert (last["id"], last["object"], last["model"]) == (
        "chatcmpl-1",
        "chat.completion.chunk",
        "m",
    )
    assert [(c["index"], c["finish_reason"]) for c in last["choices"]] == [
        (0, "abort"),
        (1, "abort"),
    ]
    # The non-streamed request: a 503 in OpenAI's shape.
    assert w_status == 503
    assert json.loads(w_text)["error"]["code"] == drain.CODE
    # Both at the deadline, not before it and not at aiohttp's own (later) cancellation.
    for end in (l_end, w_end):
        assert DRAIN_S - 0.1 <= end - stopped <= DRAIN_S + 1.0
    # The engine saw its connections go: it aborts those requests and frees their blocks.
    await asyncio.wait_for(engine.disconnected.wait(), 2)
    await engine.close()


def test_a_stream_with_no_event_yet_ends_with_an_error_event():
    end = drain.last_events(b"", b"", 1).decode()
    error, done = events(end)
    assert json.loads(error)["error"]["code"] == drain.CODE and done == "[DONE]"


def test_an_unfinished_event_is_ended_before_the_last_ones():
    first = b'data: {"id": "c", "object": "text_completion", "model": "m", "choices": []}\n\n'
    end = drain.last_events(first, b'data: {"id": "c", "obj', 1)
    assert end.startswith(b"\n\ndata: ")
    assert json.loads(events(end.decode())[0])["choices"] == [
        {"index": 0, "text": "", "finish_reason": "abort"}
    ]


@pytest.mark.parametrize(
    ("body", "choices"),
    [({}, 1), ({"n": 3}, 3), ({"prompt": ["a", "b"], "n": 2}, 4), ({"prompt": [1, 2, 3]}, 1)],
)
def test_the_choices_a_stream_carries(body, choices):
    assert drain.choices(body) == choices
