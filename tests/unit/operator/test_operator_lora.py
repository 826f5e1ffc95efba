"""spec.lora: the pod template's part (flags, mounts, no adapter list) and the sync's decisions,
with a fake engine (the engine's own endpoints are tested in tests/integration/server)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml

from pagoda.engine.cli import add_serve_args
from pagoda.operator import kube
from pagoda.operator.children import revision
from pagoda.operator.lora import Adapter, PodResult, Served, adapter_status, adapters, diff
from pagoda.operator.lora_sync import Engine, sync, sync_pod
from pagoda.operator.resources.deployment import deployment
from pagoda.operator.spec import LORA_LIMITS, engine_args, flag, parse

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "inferenceservice.yaml").read_text())
LORA_SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "properties"
]["lora"]
SQL = {"name": "sql", "source": "pvc://adapters/sql/v2"}
CHAT = {"name": "chat", "source": "hf://org/chat-lora@abc123"}
LOCAL = {"name": "local", "source": "file:///opt/lora/local"}


def spec(lora=None):
    return parse("chat", "team", {"model": {"uri": "default"}, **({"lora": lora} if lora else {})})


def pod(s):
    d = deployment(s, "img", 1)
    return d["spec"]["template"]["spec"]


def test_paths_the_engine_gets():
    got = {a.name: a.path for a in adapters({"adapters": [SQL, CHAT, LOCAL]})}
    assert got == {
        "sql": "/mnt/lora/adapters/sql/v2",
        "chat": "org/chat-lora@abc123",  # the engine downloads it
        "local": "/opt/lora/local",
    }


def test_flags_are_enable_lora_and_the_limits_by_name():
    s = spec({"maxLoras": 4, "maxLoraRank": 64, "maxCpuLoras": 8, "adapters": [SQL, CHAT]})
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    args = parser.parse_args(engine_args(s))
    assert args.enable_lora and (args.max_loras, args.max_lora_rank, args.max_cpu_loras) == (
        4,
        64,
        8,
    )
    assert not any("lora-modules" in a for a in engine_args(s))  # loaded through the endpoints
    assert set(LORA_LIMITS) == set(LORA_SCHEMA["properties"]) - {"adapters"}
    assert all(flag(k).startswith("--max-") for k in LORA_LIMITS)
    assert "--enable-lora" not in engine_args(spec())


def test_adding_or_removing_an_adapter_keeps_the_pod_template():
    one = deployment(spec({"adapters": [SQL]}), "img", 1)
    more = deployment(spec({"adapters": [SQL, CHAT, LOCAL, {**SQL, "name": "sql2"}]}), "img", 1)
    assert revision(one) == revision(more)
    # A claim not yet mounted is the one change that needs new pods.
    other = {"name": "x", "source": "pvc://other-claim/x"}
    assert revision(one) != revision(deployment(spec({"adapters": [SQL, other]}), "img", 1))


def test_pvc_claims_are_mounted_read_only_and_vllm_may_update_at_runtime():
    s = spec({"adapters": [SQL, {**SQL, "name": "b"}, CHAT]})
    p = pod(s)
    vols = [v for v in p["volumes"] if v["name"].startswith("lora-")]
    assert [v["persistentVolumeClaim"] for v in vols] == [
        {"claimName": "adapters", "readOnly": True}
    ]
    engine = p["containers"][0]
    mount = next(m for m in engine["volumeMounts"] if m["name"] == vols[0]["name"])
    assert mount == {"name": vols[0]["name"], "mountPath": "/mnt/lora/adapters", "readOnly": True}
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in engine["env"]
    kubernetes_validate.validate(deployment(s, "img", 1), "1.34.0", strict=True)


def test_diff_loads_missing_unloads_removed_and_reloads_a_moved_source():
    wanted = adapters({"adapters": [SQL, CHAT]})
    served = [
        Served("chat", "org/chat-lora@old"),  # source changed
        Served("gone", "/x"),
    ]
    d = diff(wanted, served)
    assert [a.name for a in d.load] == ["sql", "chat"] and d.unload == ["chat", "gone"]
    same = [Served(a.name, a.path) for a in wanted]
    assert diff(wanted, same).load == [] and diff(wanted, same).unload == []


def test_status_per_adapter_over_the_ready_pods():
    wanted = [Adapter("a", "file:///a"), Adapter("b", "file:///b"), Adapter("c", "file:///c")]
    results = {
        "p1": {
            "a": PodResult(True),
            "b": PodResult(False, "HTTP 400: rank 64 > 16"),
            "c": PodResult(True),
        },
        "p2": {"a": PodResult(True), "b": PodResult(True), "c": PodResult(False)},
    }
    got = {
        s["name"]: (s["state"], s["message"], s["podsReady"])
        for s in adapter_status(wanted, results)
    }
    assert got == {
        "a": ("Loaded", "", "2/2"),
        "b": ("Failed", "HTTP 400: rank 64 > 16", "1/2"),
        "c": ("Loading", "", "1/2"),
    }
    assert adapter_status(wanted[:1], {}) == [
        {"name": "a", "state": "Loading", "message": "no ready pod", "podsReady": "0/0"}
    ]


class FakeEngine:
    """vLLM's adapter endpoints over httpx's MockTransport."""

    def __init__(self, served: dict[str, str], refuse: dict[str, str], key: str | None = None):
        self.served, self.refuse, self.key, self.calls = served, refuse, key, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.key and request.headers.get("authorization") != f"Bearer {self.key}":
            return httpx.Response(401, json={"error": {"message": "bad key"}})
        path = request.url.path
        if path == "/v1/models":
            data = [{"id": "base", "root": "/m"}] + [
                {"id": n, "root": p, "parent": "base"} for n, p in self.served.items()
            ]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        self.calls.append((path, body["lora_name"]))
        if path == "/v1/load_lora_adapter":
            if body["lora_name"] in self.refuse:
                return httpx.Response(
                    400, json={"error": {"message": self.refuse[body["lora_name"]]}}
                )
            self.served[body["lora_name"]] = body["lora_path"]
            return httpx.Response(200, text="Success")
        if body["lora_name"] not in self.served:
            return httpx.Response(404, json={"error": {"message": "not found"}})
        del self.served[body["lora_name"]]
        return httpx.Response(200, text="Success")


def run_sync(fake: FakeEngine, wanted, key=None):
    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
            return await sync_pod(Engine(http, "10.0.0.1", key), wanted)

    return asyncio.run(go())


def test_sync_pod_loads_unloads_and_reports_refusals():
    fake = FakeEngine({"old": "/old", "chat": "org/chat-lora@abc123"}, {"bad": "rank 64 > 16"}, "k")
    wanted = adapters({"adapters": [SQL, CHAT, {"name": "bad", "source": "file:///bad"}]})
    results = run_sync(fake, wanted, key="k")
    assert fake.calls == [
        ("/v1/unload_lora_adapter", "old"),
        ("/v1/load_lora_adapter", "sql"),
        ("/v1/load_lora_adapter", "bad"),
    ]
    assert results["sql"] == PodResult(True) and results["chat"] == PodResult(True)
    assert results["bad"] == PodResult(False, "HTTP 400: rank 64 > 16")
    assert fake.served == {"chat": "org/chat-lora@abc123", "sql": "/mnt/lora/adapters/sql/v2"}
    fake.calls.clear()
    run_sync(fake, wanted[:2], key="k")
    assert fake.calls == []  # steady state: no call but the listing


@pytest.mark.parametrize("key", [None, "wrong"])
def test_sync_pod_reports_an_engine_it_cannot_list(key):
    fake = FakeEngine({}, {}, key="right")
    results = run_sync(fake, adapters({"adapters": [SQL]}), key=key)
    assert results["sql"].served is False and "HTTP 401: bad key" in (results["sql"].error or "")


def test_an_unreadable_api_key_is_every_adapters_failure(monkeypatch):
    def forbidden(*_):
        raise kube.ApiException(status=403)

    monkeypatch.setattr(kube, "get", forbidden)
    body = {
        "metadata": {"namespace": "team", "name": "chat"},
        "spec": {
            "engine": {"apiKeySecret": {"name": "k", "key": "v"}},
            "lora": {"adapters": [SQL]},
        },
    }
    written = []
    monkeypatch.setattr(kube, "patch_status", lambda api, ns, name, st: written.append(st))

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(FakeEngine({}, {}))) as http:
            await sync(None, http, body, {"pod-1": "10.0.0.1"})

    asyncio.run(go())
    (adapter,) = written[0]["lora"]["adapters"]
    assert adapter["state"] == "Failed" and adapter["podsReady"] == "0/1"
    assert adapter["message"] == "the operator cannot read Secret team/k key v (HTTP 403)"
