"""`pagoda gateway` end to end on one machine: a real kube-apiserver holds the InferenceServices
and their EndpointSlices, two real `pagoda serve` engines answer, the official openai client asks.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import kubernetes
import openai
import pytest
from conftest import GatewayProcess, host_ip

from pagoda.operator.spec import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def ns(kube, isvc_crd_applied):
    name = f"gw-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def world(kube_api, ns, engines):
    """InferenceServices alpha (prefix routing) and beta (minReplicas 0), each with an
    EndpointSlice at its engine; a gateway watching the namespace."""
    create_isvc(kube_api, ns, "alpha", {"model": {"uri": "default"}, "routing": "prefix"})
    create_isvc(
        kube_api,
        ns,
        "beta",
        {
            "model": {"uri": "default"},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": 1,
                "metric": {"type": "WaitingRequests", "target": 1},
            },
        },
    )
    put_slice(kube_api, ns, "alpha", engines["alpha"].port)
    put_slice(kube_api, ns, "beta", engines["beta"].port)
    gateway = GatewayProcess(
        ns, "--queue-timeout", "4", "--queue-size", "2", "--max-body-bytes", "65536"
    ).wait_healthy()
    yield gateway
    gateway.stop()


def test_models_lists_every_inferenceservice(world):
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key="none")
    wait_until(lambda: {m.id for m in client.models.list()} == {"alpha", "beta"})


def test_requests_go_to_the_engine_serving_their_model(world, engines):
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key="none")
    for model in ("alpha", "beta"):
        out = client.chat.completions.create(model=model, messages=MSGS, max_tokens=8)
        assert out.model == model and out.choices[0].message.content
    text = world.metrics()
    assert 'pagoda_gateway_requests_total{code="200",model="alpha",pod="alpha-pod"}' in text
    assert 'decision="affinity",model="alpha",policy="prefix"' in text
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gamma", messages=MSGS, max_tokens=4)
    assert "does not exist" in str(e.value)


def test_a_stream_arrives_in_many_chunks(world):
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key="none")
    stream = client.chat.completions.create(
        model="alpha", messages=MSGS, max_tokens=16, stream=True, temperature=0
    )
    chunks = [c for c in stream]
    assert len(chunks) > 5 and chunks[-1].choices[0].finish_reason is not None


@pytest.mark.parametrize(
    "content, status, needle",
    [
        (b"{nope", 400, "not valid JSON"),
        (b'{"messages": []}', 400, "no `model`"),
        (b'{"model": "../beta", "messages": []}', 400, "not a model name"),
        (b'{"model": "alpha", "pad": "' + b"x" * 70000 + b'"}', 413, "--max-body-bytes"),
    ],
)
def test_bad_input_is_a_clear_4xx(world, content, status, needle):
    r = httpx.post(
        f"{world.url}/v1/chat/completions",
        content=content,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == status and needle in r.json()["error"]["message"]


async def test_a_client_that_leaves_aborts_the_engine_request(world, engines):
    def engine_sum(series: str) -> float:
        return sum(v for (name, _), v in engines["alpha"].metrics().items() if name == series)

    before = engine_sum("vllm:generation_tokens_total")
    client = openai.AsyncOpenAI(base_url=f"{world.url}/v1", api_key="none")
    stream = await client.chat.completions.create(
        model="alpha", messages=MSGS, max_tokens=400, stream=True, extra_body={"ignore_eos": True}
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:  # a token: the request runs
            break
    await stream.close()
    await asyncio.to_thread(wait_until, lambda: engine_sum("vllm:num_requests_running") == 0, 30)
    # The engine stopped the request: far fewer than the 400 tokens it was asked for.
    assert engine_sum("vllm:generation_tokens_total") - before < 100


def test_a_model_at_zero_is_woken_held_and_served(world, kube_api, ns, engines):
    """beta loses its pod (scaled to zero): a request is held, the gateway asks for a replica
    (the annotation), the "replica" comes (the slice is back), and the request is answered."""
    delete_slice(kube_api, ns, "beta")
    wait_until(lambda: "beta" not in ready_models(world))
    client = openai.OpenAI(base_url=f"{world.url}/v1", api_key="none", max_retries=0)

    async def scenario() -> None:
        held = asyncio.create_task(
            asyncio.to_thread(
                client.chat.completions.create, model="beta", messages=MSGS, max_tokens=4
            )
        )
        await asyncio.to_thread(wait_until, lambda: wake_annotation(kube_api, ns, "beta"))
        put_slice(kube_api, ns, "beta", engines["beta"].port)
        out = await asyncio.wait_for(held, 10)
        assert out.model == "beta"

    asyncio.run(scenario())
    assert 'pagoda_gateway_wakeups_total{model="beta"} 1.0' in world.metrics()


def test_no_ready_pod_past_the_timeout_is_503_and_a_burst_is_429(world, kube_api, ns, engines):
    delete_slice(kube_api, ns, "beta")
    wait_until(lambda: "beta" not in ready_models(world))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as c:
            body = {"model": "beta", "messages": MSGS, "max_tokens": 4}
            return await asyncio.gather(
                *(c.post(f"{world.url}/v1/chat/completions", json=body) for _ in range(3))
            )

    started = time.monotonic()
    answers = asyncio.run(burst())
    assert sorted(r.status_code for r in answers) == [429, 503, 503]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in answers)
    assert time.monotonic() - started < 10
    put_slice(kube_api, ns, "beta", engines["beta"].port)


def test_held_requests_fail_clearly_when_the_gateway_stops(kube_api, ns, engines, world):
    delete_slice(kube_api, ns, "beta")
    gateway = GatewayProcess(ns, "--queue-timeout", "60").wait_healthy()
    try:

        async def held_then_stopped() -> httpx.Response:
            async with httpx.AsyncClient(timeout=30) as c:
                body = {"model": "beta", "messages": MSGS, "max_tokens": 4}
                request = asyncio.create_task(
                    c.post(f"{gateway.url}/v1/chat/completions", json=body)
                )
                await asyncio.sleep(1)
                gateway.terminate()
                return await request

        started = time.monotonic()
        r = asyncio.run(held_then_stopped())
        assert r.status_code == 503 and r.json()["error"]["code"] == "gateway_restarting"
        assert time.monotonic() - started < 5
        gateway.proc.wait(timeout=10)
    finally:
        gateway.stop()
        put_slice(kube_api, ns, "beta", engines["beta"].port)


def test_a_stream_open_at_the_drain_deadline_ends_with_abort(ns, engines, world):
    gateway = GatewayProcess(ns, "--shutdown-timeout", "2").wait_healthy()
    try:
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
        stream = client.chat.completions.create(
            model="alpha",
            messages=[{"role": "user", "content": "Count to 500."}],
            max_tokens=400,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        it = iter(stream)
        next(it), next(it)  # the role's chunk and a token: the stream is under way
        started = time.monotonic()
        gateway.terminate()
        rest = list(it)  # no exception: the stream ends with a reason and [DONE]
        assert time.monotonic() - started == pytest.approx(2, abs=1.5)
        assert len(rest) < 350 and rest[-1].choices[0].finish_reason == "abort"
        assert gateway.proc.wait(timeout=10) == 0
        # The engine saw the gateway's connection go and aborted the request.
        running = ("vllm:num_requests_running", (("engine", "0"), ("model_name", "alpha")))
        deadline = time.monotonic() + 10
        while engines["alpha"].metrics()[running] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert engines["alpha"].metrics()[running] == 0
    finally:
        gateway.stop()


# --- helpers ---------------------------------------------------------------------------------


def create_isvc(api, ns: str, name: str, spec: dict) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": spec,
    }
    kubernetes.client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, body
    )


def put_slice(api, ns: str, service: str, port: int) -> None:
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-test",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "pagoda-tests",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [host_ip()],
                "conditions": {"ready": True},
                "targetRef": {"kind": "Pod", "name": f"{service}-pod", "namespace": ns},
            }
        ],
    }
    discovery = kubernetes.client.DiscoveryV1Api(api)
    try:
        discovery.create_namespaced_endpoint_slice(ns, body)
    except kubernetes.client.ApiException as e:
        if e.status != 409:
            raise
        discovery.replace_namespaced_endpoint_slice(f"{service}-test", ns, body)


def delete_slice(api, ns: str, service: str) -> None:
    kubernetes.client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice(f"{service}-test", ns)


def wake_annotation(api, ns: str, name: str) -> str | None:
    obj = kubernetes.client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name
    )
    return (obj["metadata"].get("annotations") or {}).get("gateway.pagoda.dev/wake-requested")


def ready_models(gateway: GatewayProcess) -> set[str]:
    """Models with a ready pod as the gateway sees them (its /health)."""
    pods = httpx.get(f"{gateway.url}/health", timeout=5).json()["ready_pods"]
    return {model for model, n in pods.items() if n}


def wait_until(probe, timeout: float = 15, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := probe():
            return got
        time.sleep(every)
    pytest.fail(f"timed out after {timeout}s waiting for {probe}")
