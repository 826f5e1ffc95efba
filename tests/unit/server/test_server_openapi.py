"""/openapi.json describes every request body and every response the endpoints give."""

from __future__ import annotations

from pagoda.engine.server.openapi import REQUEST_BODIES


def test_every_operation_declares_its_body_and_responses(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "post":
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                assert ref == f"#/components/schemas/{REQUEST_BODIES[path].__name__}"
            ok = op["responses"]["200"]
            if path == "/health":  # an empty 200: no body to promise
                assert "content" not in ok
            else:
                assert ok["content"], (path, method)
            if path not in ("/metrics",):
                assert any(str(s).startswith(("4", "5")) for s in op["responses"]), path
    assert set(REQUEST_BODIES) <= set(spec["paths"])
    request = schemas["CompletionRequest"]["properties"]
    assert {"prompt", "max_tokens", "top_p", "logit_bias"} <= set(request)
    assert schemas["ErrorResponse"]["required"] == ["error"]
    chat = spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}
    metrics = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(metrics) == {"text/plain"}
