"""Two models in one real `pagoda serve` (one from --model, one from --config): routing, per-model
metrics, and /health when an engine core wedges.

The server runs with PAGODA_TEST_HOOKS=1, which mounts a /debug route that stops an engine's core
process (SIGSTOP); /health must then fail, naming the engine, and the server exit non-zero. A
killed core is test_core_process's.
"""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Model a named on the command line, model b in a --config file."""
    config = tmp_path_factory.mktemp("serve") / "models.yaml"
    config.write_text(
        "models:\n  - {model: default, served-model-name: b, max-model-len: 256, max-num-seqs: 4}\n"
    )
    proc = ServerProcess(
        "--model",
        "default",
        "--served-model-name",
        "a",
        "--max-model-len",
        "256",
        "--max-num-seqs",
        "4",
        "--models-config",
        str(config),
        env={"PAGODA_TEST_HOOKS": "1"},
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


def wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def sick(server: ServerProcess) -> list[str]:
    """The engines /health names as not healthy (none when it answers 200)."""
    r = httpx.get(f"{server.url}/health")
    return [] if r.status_code == 200 else r.json()["error"]["message"].split(": ")[1].split(", ")


def test_two_models_route_and_label_metrics(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    assert [(m.id, m.model_extra["max_model_len"]) for m in client.models.list().data] == [
        ("a", 256),
        ("b", 256),
    ]
    ra = client.completions.create(model="a", prompt="Hi", max_tokens=3, temperature=0)
    rb = client.completions.create(model="b", prompt="Hi", max_tokens=3, temperature=0)
    assert (ra.model, rb.model) == ("a", "b") and ra.choices[0].text == rb.choices[0].text
    m = server.metrics()
    for name in ("a", "b"):
        key = (
            "vllm:request_success_total",
            tuple(sorted({"model_name": name, "engine": "0", "finished_reason": "length"}.items())),
        )
        assert m[key] == 1, name


def test_wedged_core_fails_health_ends_its_requests_and_the_server(server):
    """Last in the module: it ends the server."""
    result: dict = {}

    def long_request() -> None:
        result["r"] = httpx.post(
            f"{server.url}/v1/completions",
            timeout=60,
            json={"model": "b", "prompt": "Count: 1, 2,", "max_tokens": 200, "ignore_eos": True},
        )

    t = threading.Thread(target=long_request)
    t.start()
    running = ("vllm:num_requests_running", (("engine", "0"), ("model_name", "b")))
    wait_for(lambda: server.metrics().get(running) == 1)
    assert (
        httpx.post(
            f"{server.url}/debug/engine/b/wedge", params={"health_timeout_s": 1.0}
        ).status_code
        == 204
    )
    wait_for(lambda: "b" in sick(server))
    t.join(timeout=30)
    assert result["r"].status_code == 503, "a request on a wedged engine ends instead of hanging"
    assert result["r"].json()["error"]["code"] == "engine_unhealthy"
    assert server.proc.wait(timeout=30) not in (0, None), "a wedged engine ends its server"
