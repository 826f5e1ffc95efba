"""The engine's default_sampling_params (--generation-config) fill the fields a request leaves
unset; the request's own fields win, and their max_tokens caps the request's (as in vLLM)."""

from __future__ import annotations

DEFAULTS = {"temperature": 0.3, "top_p": 0.9, "top_k": 7, "repetition_penalty": 1.1}


def test_defaults_fill_unset_fields(client, engine):
    engine.default_sampling_params = DEFAULTS | {"max_tokens": 5}
    msgs = [{"role": "user", "content": "hi"}]
    assert client.post("/v1/chat/completions", json={"messages": msgs}).status_code == 200
    p = engine.requests[-1][1]
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty, p.max_tokens) == (
        0.3,
        0.9,
        7,
        1.1,
        5,
    )
    own = {"prompt": "hi", "temperature": 1.0, "top_k": -1, "max_tokens": 9, "min_p": 0.1}
    assert client.post("/v1/completions", json=own).status_code == 200
    p = engine.requests[-1][1]
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.max_tokens) == (1.0, 0, 0.9, 0.1, 5)


def test_without_defaults_vllm_values(client, engine):
    assert client.post("/v1/completions", json={"prompt": "hi"}).status_code == 200
    p = engine.requests[-1][1]
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.repetition_penalty, p.max_tokens) == (
        1.0,
        1.0,
        0,
        0.0,
        1.0,
        16,
    )
