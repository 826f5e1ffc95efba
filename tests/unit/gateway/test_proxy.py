"""The gateway's request path end to end on loopback: real aiohttp servers as stand-in engines."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from fake_engines import FakeEngine
from prometheus_client import REGISTRY

from pagoda.gateway.app import GatewaySettings, build
from pagoda.gateway.registry import Backend, Endpoint, Registry

# The fixture's servers live on the session's loop (asyncio_default_fixture_loop_scope): so do the tests.
pytestmark = pytest.mark.asyncio(loop_scope="session")

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def world():
    """Two models: `a` (two engines, round-robin) and `b` (one engine, prefix), a gateway."""
    engines = [await FakeEngine(n, chunk_delay=0.3).start() for n in ("a-0", "a-1", "b-0")]
    registry = Registry()
    for name, routing, eps in (("a", "round-robin", engines[:2]), ("b", "prefix", engines[2:])):
        registry.upsert_isvc(
            {
                "metadata": {
                    "name": name,
                    "namespace": "ns",
                    "creationTimestamp": "2026-12-03T07:00:00Z",
                },
                "spec": {"model": {"uri": "default"}, "routing": routing},
            }
        )
        registry.lookup(name).set_slice("s", [e.endpoint() for e in eps])
    settings = GatewaySettings(max_body_bytes=4096, queue_size=2, queue_timeout=2.0)
    gateway = TestServer(
        build(settings, registry, None), host="127.0.0.1", handler_cancellation=True
    )
    await gateway.start_server()
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{gateway.port}") as client:
        yield client, registry, engines
    await gateway.close()
    for e in engines:
        await e.close()


async def post(client, body, path="/v1/chat/completions", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    async with client.post(
        path, data=data, headers={"Content-Type": "application/json"}, **kw
    ) as r:
        return r.status, await r.json(), r.headers


async def test_routes_by_model_and_lists_every_model(world):
    client, _, _ = world
    seen = {(await post(client, CHAT | {"model": "a"}))[1]["engine"] for _ in range(4)}
    assert seen == {"a-0", "a-1"}
    assert (await post(client, CHAT | {"model": "b"}))[1]["engine"] == "b-0"
    async with client.get("/v1/models") as r:
        models = (await r.json())["data"]
    assert [m["id"] for m in models] == ["a", "b"] and models[0]["created"] == 1796281200


@pytest.mark.parametrize(
    "body, status, needle",
    [
        (CHAT | {"model": "nope"}, 404, "does not exist"),
        (CHAT, 400, "no `model`"),
        (CHAT | {"model": 7}, 400, "non-empty string"),
        (CHAT | {"model": "../../etc/passwd"}, 400, "not a model name"),
        (CHAT | {"model": "/a"}, 400, "not a model name"),
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (CHAT | {"model": "a", "pad": "x" * 5000}, 413, "--max-body-bytes"),
    ],
)
async def test_bad_input_is_a_clear_4xx_in_openai_shape(world, body, status, needle):
    got, answer, _ = await post(world[0], body)
    assert got == status
    assert needle in answer["error"]["message"] and answer["error"]["type"]


async def test_a_stream_passes_chunk_by_chunk(world):
    client, _, _ = world
    arrivals = []
    started = time.monotonic()
    async with client.post(
        "/v1/chat/completions", json=CHAT | {"model": "a", "stream": True, "max_tokens": 3}
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        async for chunk in r.content.iter_any():
            arrivals.append((time.monotonic() - started, chunk))
    text = b"".join(c for _, c in arrivals)
    assert text.count(b"data: ") == 4 and text.endswith(b"data: [DONE]\n\n")
    assert arrivals[0][0] < 0.25  # the first event came before the engine wrote the second


async def test_a_client_that_leaves_aborts_the_engine_request(world):
    client, _, engines = world
    async with client.post(
        "/v1/chat/completions", json=CHAT | {"model": "b", "stream": True, "max_tokens": 50}
    ) as r:
        await r.content.readany()
        r.close()
    await asyncio.wait_for(engines[2].disconnected.wait(), 2)


async def test_a_refused_connection_is_retried_once_on_another_pod(world):
    client, registry, engines = world
    dead = Endpoint("dead", "127.0.0.1", 1)  # nothing listens on port 1
    registry.lookup("a").set_slice("s", [dead, engines[0].endpoint()])
    before = _sample("pagoda_gateway_retries_total", model="a")
    for _ in range(2):  # round-robin starts once at the dead pod
        status, answer, _ = await post(client, CHAT | {"model": "a"})
        assert (status, answer["engine"]) == (200, "a-0")
    assert _sample("pagoda_gateway_retries_total", model="a") == before + 1
    registry.lookup("a").set_slice("s", [dead])
    status, answer, _ = await post(client, CHAT | {"model": "a"})
    assert status == 502 and "dead" in answer["error"]["message"]
    assert _sample("pagoda_gateway_retries_total", model="a") == before + 1  # no pod to retry on


async def test_a_pod_dying_mid_stream_fails_that_stream_only(world):
    client, _, engines = world
    engines[2].die_mid_stream = True
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.post(
            "/v1/chat/completions", json=CHAT | {"model": "b", "stream": True}
        ) as r:
            await r.read()
    engines[2].die_mid_stream = False
    assert (await post(client, CHAT | {"model": "b"}))[0] == 200


async def test_a_model_without_pods_holds_then_forwards_or_refuses(world):
    client, registry, engines = world
    b: Backend = registry.lookup("b")
    b.set_slice("s", [])
    held = asyncio.create_task(post(client, CHAT | {"model": "b"}))
    also_held = asyncio.create_task(post(client, CHAT | {"model": "b"}))
    await asyncio.sleep(0.2)
    status, answer, headers = await post(client, CHAT | {"model": "b"})  # the queue holds 2
    assert status == 429 and int(headers["Retry-After"]) >= 1
    b.set_slice("s", [engines[2].endpoint()])
    assert [(await t)[0] for t in (held, also_held)] == [200, 200]
    b.set_slice("s", [])
    status, answer, headers = await post(client, CHAT | {"model": "b"})  # 2 s queue timeout
    assert status == 503 and "no ready replica" in answer["error"]["message"]
    assert headers["Retry-After"]


async def test_health_and_metrics(world):
    client, _, _ = world
    await post(client, CHAT | {"model": "b"})
    async with client.get("/health") as r:
        assert r.status == 200
    async with client.get("/metrics") as r:
        text = await r.text()
    assert 'pagoda_gateway_requests_total{code="200",model="b",pod="b-0"}' in text
    assert 'decision="affinity"' in text


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0
