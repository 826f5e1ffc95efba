"""The list-then-watch loop against a stand-in apiserver: events applied in order, a 410 Gone
lists again, and the wake request is a merge patch of the annotation."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pagoda.gateway.kube import WAKE_ANNOTATION, ApiServer
from pagoda.operator.scale_to_zero import wake_time

pytestmark = pytest.mark.asyncio(loop_scope="session")


def obj(name: str, rv: str) -> dict:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


@pytest.fixture
async def apiserver(tmp_path, monkeypatch):
    calls: list[tuple[str, dict]] = []
    lists = iter(
        [
            {"metadata": {"resourceVersion": "10"}, "items": [obj("a", "5")]},
            {"metadata": {"resourceVersion": "30"}, "items": [obj("b", "30")]},
        ]
    )

    async def collection(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer secret"
        calls.append((request.method, dict(request.query)))
        if request.query.get("watch") != "1":
            return web.json_response(next(lists))
        response = web.StreamResponse()
        await response.prepare(request)
        if request.query["resourceVersion"] == "10":
            for event in (
                {"type": "ADDED", "object": obj("b", "11")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "DELETED", "object": obj("a", "13")},
                {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
            ):
                await response.write(json.dumps(event).encode() + b"\n")
        else:
            await asyncio.sleep(30)
        return response

    async def patch(request: web.Request) -> web.Response:
        calls.append((request.method, await request.json()))
        assert request.headers["Content-Type"] == "application/merge-patch+json"
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/apis/x/things", collection)
    app.router.add_patch("/apis/pagoda.dev/v1alpha1/namespaces/ns/inferenceservices/m", patch)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "secret"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api = ApiServer()
    yield api, calls
    await api.close()
    await server.close()


async def test_list_watch_and_relist_after_gone(apiserver):
    api, calls = apiserver
    seen: list[tuple[str, str]] = []
    task = asyncio.create_task(
        api.follow(
            "/apis/x/things",
            lambda items: seen.append(("LIST", ",".join(i["metadata"]["name"] for i in items))),
            lambda kind, o: seen.append((kind, o["metadata"]["name"])),
            {"labelSelector": "k"},
        )
    )
    for _ in range(100):
        if len([q for _, q in calls if q.get("watch") == "1"]) >= 2:
            break
        await asyncio.sleep(0.02)
    task.cancel()
    assert seen == [("LIST", "a"), ("ADDED", "b"), ("DELETED", "a"), ("LIST", "b")]
    watches = [q for m, q in calls if q.get("watch") == "1"]
    assert watches[0]["resourceVersion"] == "10" and watches[0]["labelSelector"] == "k"
    assert watches[1]["resourceVersion"] == "30"  # the fresh list's version, not a stale one


async def test_request_replica_patches_the_wake_annotation(apiserver):
    api, calls = apiserver
    await api.request_replica("ns", "m")
    ((method, body),) = calls
    assert method == "PATCH" and WAKE_ANNOTATION in body["metadata"]["annotations"]
    # The operator reads what the gateway wrote (the contract between the two).
    assert abs(wake_time(body) - time.time()) < 5
