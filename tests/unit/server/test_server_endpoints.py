"""The endpoints' shapes over the fake engine: chat and completions, whole and streamed."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from server_fakes import SCRIPT, FakeAsyncLLM

from pagoda.engine.server.api_server import build_app


def sse_events(text: str) -> list:
    events = [line[len("data: ") :] for line in text.split("\n\n") if line]
    assert events[-1] == "[DONE]", events[-3:]
    return [json.loads(e) for e in events[:-1]]


def chat(client, **kw):
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5} | kw
    return client.post("/v1/chat/completions", json=body)


def test_chat_whole(client, engine):
    r = chat(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake"
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": SCRIPT[:5], "tool_calls": []}
    assert choice["finish_reason"] == "length" and choice["logprobs"] is None
    prompt_ids, params, _, _ = engine.requests[0]
    assert (
        engine.tokenizer.decode(prompt_ids)
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert body["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 5,
        "total_tokens": len(prompt_ids) + 5,
        "prompt_tokens_details": {"cached_tokens": 3},
    }
    assert params.max_tokens == 5


def test_chat_max_completion_tokens_wins_and_none_fills_context(client, engine):
    assert (
        chat(client, max_tokens=9, max_completion_tokens=3).json()["usage"]["completion_tokens"]
        == 3
    )
    r = chat(client, max_tokens=None)
    prompt_len = len(engine.requests[-1][0])
    assert engine.requests[-1][1].max_tokens == engine.max_model_len - prompt_len
    assert r.json()["choices"][0]["finish_reason"] == "length"


def test_chat_sampling_fields_reach_the_engine(client, engine):
    r = chat(
        client,
        temperature=0.5,
        top_p=0.9,
        top_k=7,
        min_p=0.1,
        seed=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        repetition_penalty=1.1,
        min_tokens=2,
        ignore_eos=True,
        stop_token_ids=[5],
        skip_special_tokens=False,
        logit_bias={"7": 2.5},
        user="u",
        stop="zz",
    )
    assert r.status_code == 200, r.text
    p = engine.requests[-1][1]
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed) == (0.5, 0.9, 7, 0.1, 3)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.5, -0.5, 1.1)
    assert (p.min_tokens, p.ignore_eos, p.stop_token_ids, p.skip_special_tokens) == (
        2,
        True,
        [5],
        False,
    )
    assert p.logit_bias == {7: 2.5} and p.stop == ["zz"]


def test_chat_stop_string(client):
    r = chat(client, stop=["brown"], max_tokens=30)
    [choice] = r.json()["choices"]
    assert choice["message"]["content"] == "The quick "
    assert choice["finish_reason"] == "stop" and choice["stop_reason"] == "brown"


def test_chat_stream_matches_whole(client):
    whole = chat(client, n=2).json()
    r = chat(client, n=2, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert [c["delta"] for c in events[0]["choices"]] == [{"role": "assistant", "content": ""}] * 2
    assert all(
        e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"] for e in events
    )
    texts, reasons = {0: "", 1: ""}, {}
    for e in events[1:-1]:
        assert e["usage"] is None
        for c in e["choices"]:
            texts[c["index"]] += c["delta"]["content"]
            if c["finish_reason"]:
                assert c["index"] not in reasons, "finish_reason sent twice"
                reasons[c["index"]] = c["finish_reason"]
    assert texts == {c["index"]: c["message"]["content"] for c in whole["choices"]}
    assert texts[0] != texts[1]
    assert reasons == {0: "length", 1: "length"}
    assert events[-1]["choices"] == [] and events[-1]["usage"] == whole["usage"]


def test_chat_stream_without_usage_has_no_usage_chunk(client):
    events = sse_events(chat(client, stream=True).text)
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert all(e["usage"] is None for e in events)


def test_chat_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=2, max_tokens=3)
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == list(SCRIPT[:3])
    first = content[0]
    assert first["logprob"] == -0.25 and first["bytes"] == list(b"T")
    assert len(first["top_logprobs"]) == 2
    assert first["top_logprobs"][0] == {"token": "T", "logprob": -0.25, "bytes": [84]}
    streamed = [
        c
        for e in sse_events(
            chat(client, logprobs=True, top_logprobs=2, max_tokens=3, stream=True).text
        )
        for ch in e["choices"]
        if ch["logprobs"]
        for c in ch["logprobs"]["content"]
    ]
    assert streamed == content


def test_chat_logprobs_without_top(client):
    content = chat(client, logprobs=True, max_tokens=2).json()["choices"][0]["logprobs"]["content"]
    assert [c["top_logprobs"] for c in content] == [[], []]


def test_completion_whole_text_and_token_prompts(client, engine):
    r = client.post("/v1/completions", json={"model": "fake", "prompt": "abc", "max_tokens": 4})
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert (
        body["choices"][0]["text"] == SCRIPT[:4] and body["choices"][0]["finish_reason"] == "length"
    )
    assert engine.requests[-1][0] == engine.tokenizer.encode("abc")
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 4
    r = client.post("/v1/completions", json={"model": "fake", "prompt": [65, 66], "max_tokens": 2})
    assert r.status_code == 200 and engine.requests[-1][0] == [65, 66]


def test_completion_batch_of_prompts_and_n(client, engine):
    r = client.post(
        "/v1/completions", json={"prompt": [[65], [66, 67]], "max_tokens": 3, "n": 2, "seed": 1}
    )
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["usage"]["prompt_tokens"] == 3 and body["usage"]["completion_tokens"] == 12
    ids = [req[2] for req in engine.requests]
    assert ids[0].endswith("-0") and ids[1].endswith("-1") and len(set(ids)) == 2
    events = sse_events(
        client.post(
            "/v1/completions",
            json={"prompt": ["a", "b"], "max_tokens": 3, "n": 2, "seed": 1, "stream": True},
        ).text
    )
    texts = {}
    for e in events:
        for c in e["choices"]:
            texts[c["index"]] = texts.get(c["index"], "") + c["text"]
    assert texts == {c["index"]: c["text"] for c in body["choices"]}


def test_completion_logprobs_whole_and_streamed(client):
    body = {"prompt": "x", "max_tokens": 4, "logprobs": 2}
    lp = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
    assert lp["tokens"] == list(SCRIPT[:4])
    assert lp["token_logprobs"] == [-0.25] * 4
    assert lp["text_offset"] == [0, 1, 2, 3]
    assert all(len(t) == 2 and t[tok] == -0.25 for t, tok in zip(lp["top_logprobs"], lp["tokens"]))
    merged = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for e in sse_events(client.post("/v1/completions", json=body | {"stream": True}).text):
        for k in merged:
            merged[k] += e["choices"][0]["logprobs"][k]
    assert merged == lp
    zero = client.post("/v1/completions", json=body | {"logprobs": 0}).json()["choices"][0][
        "logprobs"
    ]
    assert zero["top_logprobs"] == [None] * 4 and zero["token_logprobs"] == [-0.25] * 4


def test_completion_echo(client):
    r = client.post("/v1/completions", json={"prompt": "Hi ", "max_tokens": 2, "echo": True})
    assert r.json()["choices"][0]["text"] == "Hi " + SCRIPT[:2]
    events = sse_events(
        client.post(
            "/v1/completions", json={"prompt": "Hi ", "max_tokens": 2, "echo": True, "stream": True}
        ).text
    )
    assert "".join(e["choices"][0]["text"] for e in events) == "Hi " + SCRIPT[:2]


def test_completion_stream_usage(client):
    events = sse_events(
        client.post(
            "/v1/completions",
            json={
                "prompt": "a",
                "max_tokens": 3,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ).text
    )
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 3
    assert events[-2]["choices"][0]["finish_reason"] == "length"


def test_models(client):
    [card] = client.get("/v1/models").json()["data"]
    assert card["id"] == "fake" and card["max_model_len"] == 256 and card["root"] == "/models/fake"
    assert client.get("/v1/models/fake").json()["id"] == "fake"
    r = client.get("/v1/models/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_tokenize_detokenize(client):
    r = client.post("/tokenize", json={"prompt": "hey"}).json()
    assert r == {"count": 3, "max_model_len": 256, "tokens": r["tokens"]}
    assert client.post("/detokenize", json={"tokens": r["tokens"]}).json() == {"prompt": "hey"}
    chat_tokens = client.post(
        "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}
    ).json()
    assert chat_tokens["count"] > 10
    assert client.post("/tokenize", json={}).status_code == 400
    assert client.post("/detokenize", json={"tokens": [10**9]}).status_code == 400


def test_version_health_metrics(client, engine):
    assert client.get("/version").json()["version"]
    assert client.get("/health").status_code == 200
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    engine.healthy = False
    r = client.get("/health")
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unhealthy"
    assert chat(client).status_code == 503


def test_lifespan_starts_and_stops_engines(engine):
    with TestClient(build_app({"fake": engine})):
        assert engine.started and not engine.stopped
    assert engine.stopped


def test_several_models_route_by_name():
    a, b = FakeAsyncLLM("a", max_model_len=100), FakeAsyncLLM("b", max_model_len=200)
    with TestClient(build_app({"a": a, "b": b})) as c:
        assert [(m["id"], m["max_model_len"]) for m in c.get("/v1/models").json()["data"]] == [
            ("a", 100),
            ("b", 200),
        ]
        assert (
            c.post("/v1/completions", json={"model": "b", "prompt": "x", "max_tokens": 1}).json()[
                "model"
            ]
            == "b"
        )
        assert len(b.requests) == 1 and not a.requests
        assert (
            c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1}).json()["model"] == "a"
        )
        assert c.post("/v1/completions", json={"model": "c", "prompt": "x"}).status_code == 404


def test_cors_only_for_allowed_origins():
    with TestClient(
        build_app({"fake": FakeAsyncLLM()}, allowed_origins=["https://ui.example"])
    ) as c:
        ok = c.options(
            "/v1/models",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
        )
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        other = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert ok.headers["access-control-allow-credentials"] == "true"


def test_cors_with_any_origin_never_allows_credentials():
    with TestClient(build_app({"fake": FakeAsyncLLM()}, allowed_origins=["*"])) as c:
        r = c.get("/v1/models", headers={"Origin": "https://evil.example"})
        assert r.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in r.headers


def test_streamed_logprobs_do_not_read_ahead_of_the_chunk(client, engine):
    """The real engine's outputs share token lists that its thread keeps appending to; here the
    whole request runs before the first chunk is written, so each list is already complete."""
    live = engine.generate

    async def ahead(*args, **kw):
        for out in [out async for out in live(*args, **kw)]:
            yield out

    whole = client.post(
        "/v1/completions", json={"prompt": "x", "max_tokens": 5, "logprobs": 1, "n": 2}
    ).json()
    engine.generate = ahead
    merged = {
        i: {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for i in (0, 1)
    }
    for e in sse_events(
        client.post(
            "/v1/completions",
            json={"prompt": "x", "max_tokens": 5, "logprobs": 1, "n": 2, "stream": True},
        ).text
    ):
        for c in e["choices"]:
            for k, v in c["logprobs"].items():
                merged[c["index"]][k] += v
    assert merged == {c["index"]: c["logprobs"] for c in whole["choices"]}
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "logprobs": True,
            "stream": True,
        },
    )
    chat = [
        c["token"]
        for e in sse_events(r.text)
        for ch in e["choices"]
        if ch["logprobs"]
        for c in ch["logprobs"]["content"]
    ]
    assert chat == list(SCRIPT[:5])
