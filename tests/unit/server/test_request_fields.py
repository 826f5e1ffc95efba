"""No silent ignoring: a request field Pagoda does not implement is a 400 naming it; only the
fields OpenAI documents as not changing the output are accepted without effect; null is unsent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pagoda.engine import compat
from pagoda.engine.server.protocol import IGNORED_FIELDS, ChatCompletionRequest, CompletionRequest

MSGS = [{"role": "user", "content": "hi"}]
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize(
    "path,extra,param",
    [
        (CHAT, {"functions": [{"name": "f"}]}, "functions"),
        (CHAT, {"audio": {"voice": "alloy"}}, "audio"),
        (COMPLETIONS, {"suffix": "x"}, "suffix"),
        (COMPLETIONS, {"nonsense_field": 1}, "nonsense_field"),
        (CHAT, {"stream": True, "stream_options": {"bogus": 1}}, "stream_options.bogus"),
    ],
)
def test_unsupported_field_is_a_400_naming_it(client, path, extra, param):
    body = ({"messages": MSGS} if path == CHAT else {"prompt": "hi"}) | {"max_tokens": 2} | extra
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_unsupported_field_inside_a_message_is_named(client):
    msgs = [{"role": "user", "content": "hi", "refusal": "no"}]
    r = client.post(CHAT, json={"messages": msgs, "max_tokens": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages.0.refusal"


def test_ignorable_fields_and_nulls_are_accepted(client):
    ignored = dict.fromkeys(IGNORED_FIELDS, "x") | {"metadata": {"k": "v"}, "store": False}
    body = {"messages": MSGS, "max_tokens": 2, "functions": None, "audio": None} | ignored
    plain = client.post(CHAT, json={"messages": MSGS, "max_tokens": 2, "seed": 1, "temperature": 0})
    r = client.post(CHAT, json=body | {"seed": 1, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == plain.json()["choices"]


def test_compatibility_doc_is_generated_from_the_code():
    doc = Path(__file__).parents[3] / "docs" / "compatibility.md"
    assert doc.read_text() == compat.render(), "run: python -m pagoda.engine.compat > " + str(doc)


@pytest.mark.parametrize(
    "path,model,names",
    [
        (CHAT, ChatCompletionRequest, compat.OPENAI_CHAT + " " + compat.VLLM_CHAT),
        (COMPLETIONS, CompletionRequest, compat.OPENAI_COMPLETIONS + " " + compat.VLLM_COMPLETIONS),
    ],
)
def test_every_field_the_doc_calls_unsupported_is_a_400(client, path, model, names):
    missing = set(names.split()) - set(model.model_fields) - set(IGNORED_FIELDS)
    base = {"messages": MSGS} if path == CHAT else {"prompt": "hi"}
    for name in sorted(missing):
        r = client.post(path, json=base | {"max_tokens": 2, name: 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == name, (name, r.text)


def test_cache_salt_reaches_the_engine(client, engine):
    r = client.post(CHAT, json={"messages": MSGS, "max_tokens": 2, "cache_salt": "tenant-a"})
    assert r.status_code == 200 and engine.cache_salts == ["tenant-a"]
    r = client.post(COMPLETIONS, json={"prompt": "hi", "max_tokens": 2, "cache_salt": ""})
    assert r.status_code == 400 and r.json()["error"]["param"] == "cache_salt"


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
def test_continuous_usage_stats_in_every_chunk(client, path):
    base = {"messages": MSGS} if path == CHAT else {"prompt": "hi"}
    options = {"include_usage": True, "continuous_usage_stats": True}
    body = base | {"max_tokens": 3, "stream": True, "stream_options": options}
    with client.stream("POST", path, json=body) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    counts = [e["usage"]["completion_tokens"] for e in events if e["choices"] and e.get("usage")]
    assert counts and counts == sorted(counts) and counts[-1] == 3, events
    assert events[-1]["usage"]["completion_tokens"] == 3 and not events[-1]["choices"]


def test_allowed_token_ids_reach_the_sampler_and_are_checked(client, engine):
    r = client.post(
        COMPLETIONS, json={"prompt": "hi", "max_tokens": 2, "allowed_token_ids": [5, 6]}
    )
    assert r.status_code == 200 and engine.requests[-1][1].allowed_token_ids == [5, 6]
    for bad in ([], [10**6]):
        r = client.post(
            COMPLETIONS, json={"prompt": "hi", "max_tokens": 2, "allowed_token_ids": bad}
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "allowed_token_ids", r.text


def test_beam_search_fields_reach_the_engine(client, engine):
    body = {"prompt": "hi", "max_tokens": 2, "temperature": 0}
    beam = {"use_beam_search": True, "best_of": 3, "n": 2, "length_penalty": 0.5}
    assert client.post(COMPLETIONS, json=body | beam).status_code == 200
    params = engine.requests[-1][1]
    assert (params.use_beam_search, params.best_of, params.n, params.length_penalty) == (
        True,
        3,
        2,
        0.5,
    )
    r = client.post(COMPLETIONS, json=body | {"best_of": 3})  # not silently ignored
    assert r.status_code == 400 and r.json()["error"]["param"] == "best_of", r.text


def test_max_logprobs_limits_requests():
    from fastapi.testclient import TestClient
    from server_fakes import FakeAsyncLLM

    from pagoda.engine.server.api_server import build_app

    engine = FakeAsyncLLM()
    engine.config.max_logprobs = 2
    with TestClient(build_app({"fake": engine})) as client:
        ok = {"prompt": "hi", "max_tokens": 1, "logprobs": 2}
        assert client.post(COMPLETIONS, json=ok).status_code == 200
        r = client.post(COMPLETIONS, json=ok | {"logprobs": 3})
        assert r.status_code == 400 and "--max-logprobs" in r.json()["error"]["message"]
        chat = {"messages": MSGS, "max_tokens": 1, "logprobs": True, "top_logprobs": 5}
        r = client.post(CHAT, json=chat)
        assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
