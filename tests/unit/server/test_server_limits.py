"""What one request may ask of the server: its body's size, its fan-out, its lists, its own chat
template, a place in the queue; and that a big body never stalls /health."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from server_fakes import FakeAsyncLLM, serve_in_thread

from pagoda.engine.server.api_server import build_app
from pagoda.engine.server.args import RequestPolicy
from pagoda.engine.server.protocol import MAX_LOGIT_BIAS, MAX_STOP_STRINGS

MSGS = [{"role": "user", "content": "hi"}]


def client_with(policy: RequestPolicy, engine: FakeAsyncLLM | None = None) -> TestClient:
    engine = engine or FakeAsyncLLM()
    return TestClient(build_app({"fake": engine}, policy=policy), raise_server_exceptions=False)


def error_of(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    return r.json()["error"]


def test_body_over_the_limit_is_413_declared_or_chunked():
    with client_with(RequestPolicy(max_request_body_bytes=1000)) as c:
        big = json.dumps({"prompt": "x" * 2000}).encode()
        declared = c.post(
            "/v1/completions", content=big, headers={"content-type": "application/json"}
        )
        assert error_of(declared, 413)["code"] == "request_too_large"
        chunked = c.post(
            "/v1/completions",
            content=iter([big[:600], big[600:]]),  # no Content-Length: counted as it is read
            headers={"content-type": "application/json"},
        )
        assert error_of(chunked, 413)["code"] == "request_too_large"
        fits = c.post("/v1/completions", json={"prompt": "x" * 100, "max_tokens": 1})
        assert fits.status_code == 200


@pytest.mark.parametrize(
    "body,param",
    [
        ({"prompt": ["a"] * 5, "n": 2}, "prompt"),  # 10 sequences > max_num_seqs 8
        ({"prompt": "a", "stop": ["s"] * (MAX_STOP_STRINGS + 1)}, "stop"),
        (
            {"prompt": "a", "logit_bias": {str(i): 1 for i in range(MAX_LOGIT_BIAS + 1)}},
            "logit_bias",
        ),
        ({"prompt": "a" * 300 * 260}, "prompt"),  # cannot fit the context: not even tokenized
    ],
)
def test_fan_out_and_lists_are_bounded(client, engine, body, param):
    r = client.post("/v1/completions", json=body)
    assert error_of(r, 400)["param"] == param
    assert not engine.requests


def test_fan_out_up_to_the_batch_is_served(client):
    r = client.post("/v1/completions", json={"prompt": ["a"] * 4, "n": 2, "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 8


TEMPLATE = "{% for m in messages %}{{ m['content'] }}|{% endfor %}"


def test_a_request_template_needs_the_operators_trust():
    kwargs = {"chat_template": TEMPLATE}
    body = {"messages": MSGS, "max_tokens": 1, "chat_template_kwargs": kwargs}
    with client_with(RequestPolicy()) as c:
        err = error_of(c.post("/v1/chat/completions", json=body), 400)
        assert err["param"] == "chat_template_kwargs.chat_template"
        assert "--trust-request-chat-template" in err["message"]
    engine = FakeAsyncLLM()
    with client_with(RequestPolicy(trust_request_chat_template=True), engine) as c:
        assert c.post("/v1/chat/completions", json=body).status_code == 200
        assert engine.tokenizer.decode(engine.requests[-1][0]) == "hi|"


def test_trusted_templates_still_run_in_the_sandbox():
    escape = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    body = {"messages": MSGS, "max_tokens": 1, "chat_template_kwargs": {"chat_template": escape}}
    with client_with(RequestPolicy(trust_request_chat_template=True)) as c:
        err = error_of(c.post("/v1/chat/completions", json=body), 400)
        assert "Chat template failed" in err["message"] and "unsafe" in err["message"]


def test_template_kwargs_cannot_set_apply_chat_template_parameters(client):
    body = {"messages": MSGS, "chat_template_kwargs": {"tokenize": True}}
    err = error_of(client.post("/v1/chat/completions", json=body), 400)
    assert err["param"] == "chat_template_kwargs.tokenize"


def test_waiting_queue_bound_answers_429_with_retry_after():
    engine = FakeAsyncLLM()
    with client_with(RequestPolicy(max_waiting_requests=3), engine) as c:
        engine.num_waiting = lambda: 3
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 1})
        assert error_of(r, 429)["code"] == "too_many_requests"
        assert r.headers["retry-after"] == "1"
        engine.num_waiting = lambda: 2
        assert c.post("/v1/completions", json={"prompt": "a", "max_tokens": 1}).status_code == 200


SEND_BODY = """
import sys, httpx
body = open(sys.argv[2], "rb").read()
r = httpx.post(sys.argv[1], content=body, headers={"content-type": "application/json"}, timeout=60)
print(r.status_code)
"""


@pytest.mark.parametrize(
    "body,status",
    [
        (json.dumps({"prompt": "x" * (10 << 20)}).encode(), 413),  # refused unread
        # Under the limit: parsed and rendered off the event loop, then refused as longer than
        # any context without being tokenized.
        (json.dumps({"messages": [{"role": "user", "content": "x" * (3 << 20)}]}).encode(), 400),
    ],
)
def test_health_answers_within_100ms_while_a_big_body_is_handled(tmp_path, body, status):
    """The body comes from another process, so that only the server's work is measured."""
    path = "/v1/chat/completions" if b"messages" in body[:20] else "/v1/completions"
    (tmp_path / "body.json").write_bytes(body)
    with serve_in_thread(build_app({"fake": FakeAsyncLLM()})) as url, httpx.Client() as h:
        h.get(f"{url}/health")  # the connection is open before the clock starts
        # The server shares this process: a collection of the whole test session's heap would
        # stall it and be counted as the server's; no garbage collection while measuring.
        gc.collect()
        gc.disable()
        try:
            sender = subprocess.Popen(
                [sys.executable, "-c", SEND_BODY, f"{url}{path}", str(tmp_path / "body.json")],
                stdout=subprocess.PIPE,
                text=True,
            )
            latencies = []
            while sender.poll() is None:
                start = time.perf_counter()
                assert h.get(f"{url}/health").status_code == 200
                latencies.append(time.perf_counter() - start)
                time.sleep(0.01)
        finally:
            gc.enable()
    assert sender.stdout.read().strip() == str(status)
    assert latencies and max(latencies) < 0.1, max(latencies)
