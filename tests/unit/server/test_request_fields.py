"""No silent ignoring: a request field Pagoda does not implement is a 400 naming it; only the
fields OpenAI documents as not changing the output are accepted without effect; null is unsent."""

from __future__ import annotations

import pytest
from pagoda.engine.server.protocol import IGNORED_FIELDS

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
