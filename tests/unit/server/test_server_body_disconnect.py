"""A client that leaves while its body is still being read is no server error (the soak's
abandoned requests logged a traceback each)."""

from __future__ import annotations

import logging

from pagoda.engine.server.api_server import build_app


async def test_a_client_gone_while_its_body_is_read_is_not_logged_as_an_error(engine, caplog):
    app = build_app({engine.config.name: engine})
    messages = [
        {"type": "http.request", "body": b'{"prompt": "hel', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    with caplog.at_level(logging.ERROR):
        await app(scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert sent[0]["status"] == 499
