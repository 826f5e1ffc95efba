"""Bad input answers in OpenAI's error shape with the right status; never a 422 or a 500."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_fakes import FakeAsyncLLM

from pagoda.engine.server import streams
from pagoda.engine.server.api_server import build_app

MSGS = [{"role": "user", "content": "hi"}]


def assert_error(r, status: int, param: str | None = "any") -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param != "any":
        assert err["param"] == param, err
    return err


@pytest.mark.parametrize(
    "path,body,param",
    [
        ("/v1/chat/completions", {"messages": MSGS, "max_tokens": -1}, "max_tokens"),
        ("/v1/chat/completions", {"messages": MSGS, "max_tokens": 0}, "max_tokens"),
        (
            "/v1/chat/completions",
            {"messages": MSGS, "max_completion_tokens": 0, "max_tokens": 5},
            "max_tokens",
        ),
        ("/v1/chat/completions", {"messages": MSGS, "temperature": -0.1}, "temperature"),
        ("/v1/chat/completions", {"messages": MSGS, "n": 0}, "n"),
        ("/v1/chat/completions", {"messages": MSGS, "n": 9}, "n"),  # beyond max_num_seqs
        ("/v1/chat/completions", {"messages": MSGS, "top_p": 0}, "top_p"),
        # Past what the sampler computes: 0 in float32, beyond int64 (these once killed the loop).
        ("/v1/chat/completions", {"messages": MSGS, "top_p": 1e-50}, "top_p"),
        ("/v1/chat/completions", {"messages": MSGS, "top_k": 2**70}, "top_k"),
        ("/v1/completions", {"prompt": "x", "repetition_penalty": 1e-300}, "repetition_penalty"),
        ("/v1/completions", {"prompt": "x", "temperature": 1e39}, "temperature"),
        ("/v1/completions", {"prompt": "x", "seed": 2**63}, "seed"),
        ("/v1/completions", {"prompt": "x", "logit_bias": {str(2**70): 1}}, "logit_bias"),
        (
            "/v1/chat/completions",
            {"messages": MSGS, "max_tokens": 250},
            "max_tokens",
        ),  # past max_model_len
        ("/v1/chat/completions", {"messages": []}, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "wizard", "content": "x"}]},
            "messages.0.role",
        ),
        ("/v1/chat/completions", {}, "messages"),
        (
            "/v1/chat/completions",
            {"messages": MSGS, "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
        ),
        ("/v1/chat/completions", {"messages": MSGS, "top_logprobs": 2}, "top_logprobs"),
        ("/v1/chat/completions", {"messages": MSGS, "logit_bias": {"x": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"messages": MSGS, "logit_bias": {"5": 101}}, "logit_bias"),
        ("/v1/chat/completions", {"messages": MSGS, "logit_bias": {"99999": 1}}, "logit_bias"),
        ("/v1/chat/completions", {"messages": MSGS, "stop_token_ids": [-1]}, "stop_token_ids"),
        ("/v1/chat/completions", {"messages": MSGS, "seed": 2**64}, "seed"),
        ("/v1/chat/completions", {"messages": MSGS, "priority": 1}, "priority"),  # fcfs engine
        (
            "/v1/chat/completions",
            {"messages": MSGS, "min_tokens": 9, "max_tokens": 3},
            "min_tokens",
        ),
        (
            "/v1/chat/completions",
            {"messages": MSGS, "stream_options": {"include_usage": "maybe"}},
            "stream_options.include_usage",
        ),
        ("/v1/completions", {"prompt": "x" * 300}, "prompt"),  # the prompt alone fills the context
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"prompt": []}, "prompt"),
        ("/v1/completions", {"prompt": [[]]}, "prompt"),
        ("/v1/completions", {"prompt": [1, 10**6]}, "prompt"),
        ("/v1/completions", {"prompt": [-1]}, "prompt"),
        ("/v1/completions", {"prompt": [1.5]}, "prompt"),
        ("/v1/completions", {"prompt": "x", "prompt_logprobs": 1, "stream": True}, "stream"),
        ("/v1/completions", {"prompt": "x", "prompt_logprobs": 21}, "prompt_logprobs"),
        ("/v1/chat/completions", {"messages": MSGS, "prompt_logprobs": -1}, "prompt_logprobs"),
        ("/v1/completions", {"max_tokens": 3}, "prompt"),
    ],
)
def test_bad_fields_are_400(client, engine, path, body, param):
    assert_error(client.post(path, json={"model": "fake"} | body), 400, param)
    assert not engine.requests, "a rejected request must not reach the engine"


def test_unknown_model_is_404(client):
    err = assert_error(
        client.post("/v1/chat/completions", json={"model": "gpt-4", "messages": MSGS}), 404, "model"
    )
    assert err["code"] == "model_not_found" and "gpt-4" in err["message"]


@pytest.mark.parametrize(
    "content,ctype",
    [
        (b'{"messages": [', "application/json"),
        (b"NaN", "application/json"),
        (
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            "application/json",
        ),
        (b"\xff\xfe", "application/json"),
        (b"[1, 2]", "application/json"),
        (
            b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
            "application/json",
        ),  # a lone surrogate
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "text/plain"),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', None),
    ],
)
def test_malformed_body_or_content_type_is_400(client, content, ctype):
    headers = {"content-type": ctype} if ctype else {}
    assert_error(client.post("/v1/chat/completions", content=content, headers=headers), 400)


def test_unknown_route_and_method_in_openai_shape(client):
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/chat/completions"), 405)


def test_api_key():
    engine = FakeAsyncLLM()
    with TestClient(build_app({"fake": engine}, api_key="sekret")) as c:
        body = {"messages": MSGS, "max_tokens": 1}
        missing = c.post("/v1/chat/completions", json=body)
        assert assert_error(missing, 401)["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error(
            c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"}), 401
        )
        assert_error(c.get("/v1/models", headers={"Authorization": "sekret"}), 401)
        assert_error(c.post("/tokenize", json={"prompt": "x"}), 401)
        ok = c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        for open_path in ("/health", "/metrics", "/version"):
            assert c.get(open_path).status_code == 200


def test_draining_answers_503_except_metrics(client, engine):
    client.app.state.lifecycle.draining = True
    r = client.post("/v1/completions", json={"prompt": "x"})
    assert assert_error(r, 503)["code"] == "shutting_down" and r.headers["connection"] == "close"
    assert client.get("/health").status_code == 503
    assert client.get("/metrics").status_code == 200
    assert not engine.requests


def test_engine_error_mid_stream_is_an_error_event(client, engine):
    async def broken(prompt, params, request_id, priority=0, cache_salt=None, lora_request=None):
        raise RuntimeError("boom")
        yield  # an async generator

    engine.generate = broken
    r = client.post("/v1/completions", json={"prompt": "x", "stream": True})
    assert r.status_code == 200
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    err = json.loads(events[-2][len("data: ") :])["error"]
    assert "boom" in err["message"] and err["type"] == "server_error"
    assert_error(client.post("/v1/completions", json={"prompt": "x"}), 500)


def test_engine_value_error_is_the_requests_fault(client, engine):
    async def refuses(prompt, params, request_id, priority=0, cache_salt=None, lora_request=None):
        raise ValueError("prompt token ids must be in [0, 100)")
        yield  # an async generator

    engine.generate = refuses
    assert (
        "[0, 100)"
        in assert_error(client.post("/v1/completions", json={"prompt": "x"}), 400)["message"]
    )
    r = client.post("/v1/chat/completions", json={"messages": MSGS, "stream": True})
    err = json.loads([e for e in r.text.split("\n\n") if e][-2][len("data: ") :])["error"]
    assert err["type"] == "invalid_request_error" and "[0, 100)" in err["message"]


def test_a_wedged_engine_ends_its_requests_with_503(client, engine, monkeypatch):
    monkeypatch.setattr(streams, "HEALTH_POLL_S", 0.05)
    engine.wedge_after = 2
    err = assert_error(client.post("/v1/completions", json={"prompt": "x", "max_tokens": 50}), 503)
    assert err["code"] == "engine_unhealthy"
    engine.healthy = True
    r = client.post(
        "/v1/chat/completions", json={"messages": MSGS, "max_tokens": 50, "stream": True}
    )
    events = [e for e in r.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and "engine_unhealthy" in events[-2]
    assert len(engine.aborted) == 2 and engine.free_blocks == engine.total_blocks


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
CHAT_FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "stream",
    "stream_options",
    "top_k",
    "min_p",
    "repetition_penalty",
    "min_tokens",
    "stop_token_ids",
    "priority",
]
COMPLETION_FIELDS = [
    f for f in CHAT_FIELDS if f not in ("messages", "max_completion_tokens", "top_logprobs")
] + ["prompt", "echo"]


def fuzz_bodies(fields: list[str], base: dict):
    overrides = st.dictionaries(st.sampled_from(fields), json_values, max_size=3)
    return overrides.map(lambda o: base | o)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    chat=fuzz_bodies(CHAT_FIELDS, {"messages": MSGS, "max_tokens": 2}),
    completion=fuzz_bodies(COMPLETION_FIELDS, {"prompt": "x", "max_tokens": 2}),
)
def test_no_input_gives_a_500(client, chat, completion):
    for path, body in (("/v1/chat/completions", chat), ("/v1/completions", completion)):
        r = client.post(path, json=body)
        assert r.status_code in (200, 400, 404), (body, r.status_code, r.text)
        if r.status_code == 200 and body.get("stream") is True:
            assert r.text.endswith("data: [DONE]\n\n") and '"error"' not in r.text, (body, r.text)
