"""A client that leaves aborts its request: over real sockets (uvicorn in a thread), fake engine."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from server_fakes import FakeAsyncLLM, serve_in_thread

from pagoda.engine.server.api_server import build_app


@pytest.fixture
def slow_server():
    engine = FakeAsyncLLM(step_delay=0.02)
    with serve_in_thread(build_app({"fake": engine})) as url:
        yield engine, url


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        ("/v1/completions", {"prompt": ["a", "b"]}),
    ],
)
def test_disconnect_mid_stream_aborts_and_frees_blocks(slow_server, path, body):
    engine, url = slow_server
    with (
        httpx.Client(base_url=url) as c,
        c.stream("POST", path, json=body | {"max_tokens": 200, "stream": True}) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
        wait_until(lambda: engine.free_blocks < engine.total_blocks)
    wait_until(lambda: engine.free_blocks == engine.total_blocks)
    assert {rid for _, _, rid, _ in engine.requests} == set(engine.aborted)
    assert not engine.finished


def test_disconnect_while_waiting_for_whole_response_aborts(slow_server):
    engine, url = slow_server
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "a", "max_tokens": 200}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        wait_until(lambda: engine.free_blocks < engine.total_blocks)  # generating
    wait_until(lambda: engine.free_blocks == engine.total_blocks)
    assert len(engine.aborted) == 1 and not engine.finished


def test_finished_stream_frees_blocks_without_abort(slow_server):
    engine, url = slow_server
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 3, "stream": True})
    assert r.text.endswith("data: [DONE]\n\n")
    assert (
        engine.free_blocks == engine.total_blocks
        and not engine.aborted
        and len(engine.finished) == 1
    )
