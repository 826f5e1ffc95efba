"""/v1/embeddings on a server whose model generates: vLLM's 400, before any engine request."""

from __future__ import annotations


def test_generate_runner_refuses_embeddings(client, engine):
    r = client.post("/v1/embeddings", json={"model": "fake", "input": "hi"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "The model does not support Embeddings API"
    assert engine.requests == []


def test_embeddings_request_fields_are_checked(client):
    r = client.post("/v1/embeddings", json={"input": "hi", "encoding_format": "int8", "user": "u1"})
    assert r.status_code == 400 and "encoding_format" in r.json()["error"]["message"]
    r = client.post("/v1/embeddings", json={"input": "hi", "truncate_prompt_tokens": 3})
    assert r.status_code == 400 and "truncate_prompt_tokens" in r.json()["error"]["message"]
