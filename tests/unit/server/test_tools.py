"""Tool calling in the server: the parsers, tool_choice rules, and OpenAI's response and chunk
shapes (over the fake engine, whose script is set to a model's tool call)."""

from __future__ import annotations

import json

import pytest
import server_fakes

from pagoda.engine.server.tools.parsers import parse_hermes, parse_llama3_json, parse_mistral

MSGS = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_hermes_parser():
    text = 'Let me look.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n'
    text += '<tool_call>{"name": "g", "arguments": {}}</tool_call>'
    assert parse_hermes(text) == ("Let me look.", [("f", '{"a": 1}'), ("g", "{}")])
    assert parse_hermes("no calls") == ("no calls", [])
    assert parse_hermes("<tool_call>{broken</tool_call>") == ("<tool_call>{broken</tool_call>", [])


def test_llama3_json_and_mistral_parsers():
    text = '<|python_tag|>{"name": "f", "parameters": {"x": "y"}}; {"name": "g", "parameters": {}}'
    assert parse_llama3_json(text) == (None, [("f", '{"x": "y"}'), ("g", "{}")])
    assert parse_llama3_json("The answer is {1}") == ("The answer is {1}", [])
    text = 'Sure [TOOL_CALLS][{"name": "f", "arguments": {"k": [1, 2]}}]'
    assert parse_mistral(text) == ("Sure", [("f", '{"k": [1, 2]}')])
    assert parse_mistral("plain") == ("plain", [])


@pytest.fixture
def hermes_client(client, monkeypatch):
    client.app.state.tool_call_parser = "hermes"
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    monkeypatch.setattr(server_fakes, "SCRIPT", call)
    return client


def ask(client, **kw):
    body = {"messages": MSGS, "tools": [WEATHER], "max_tokens": 200, "stop": ["</tool_call>"]}
    return client.post("/v1/chat/completions", json=body | kw)


def test_auto_tool_call_in_openai_shape(hermes_client):
    r = ask(hermes_client)
    assert r.status_code == 200, r.text
    [choice] = r.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("chatcmpl-tool-")
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


# Each parser's model text, and the stop string that ends it (the fake repeats its script).
CALLS = {
    "hermes": (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        "</tool_call>",
    ),
    "llama3_json": ('{"name": "get_weather", "parameters": {"city": "Paris"}}', "}}"),
    "mistral": ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]', "}}]"),
}


def streamed_calls(client, **kw) -> tuple[list[dict], list[dict]]:
    """(the calls put together from OpenAI-shaped deltas, the events), checking the deltas' shape:
    a call's first delta has its index, id, type and name with empty arguments, the next ones
    only arguments fragments."""
    with client.stream("POST", "/v1/chat/completions", json=ask_body(stream=True, **kw)) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    calls: dict[int, dict] = {}
    for e in events:
        for c in e["choices"]:
            assert not c["delta"].get("content"), "a call's text is not also content"
            for d in c["delta"].get("tool_calls") or []:
                if d["index"] not in calls:
                    assert d["type"] == "function" and d["id"].startswith("chatcmpl-tool-")
                    assert d["function"]["arguments"] == ""
                    calls[d["index"]] = {"name": d["function"]["name"], "arguments": ""}
                else:
                    assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"}
                    calls[d["index"]]["arguments"] += d["function"]["arguments"]
    return [calls[i] for i in sorted(calls)], events


@pytest.mark.parametrize("parser", sorted(CALLS))
def test_streamed_tool_call_deltas(client, monkeypatch, parser):
    client.app.state.tool_call_parser = parser
    script, stop = CALLS[parser]
    monkeypatch.setattr(server_fakes, "SCRIPT", script)
    calls, events = streamed_calls(client, stop=[stop], include_stop_str_in_output=True)
    assert calls == [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    last = events[-1]["choices"][0]["delta"]
    assert "tool_calls" not in last and not last["content"]


@pytest.mark.parametrize(
    "choice, script, stop",
    [
        ({"type": "function", "function": {"name": "get_weather"}}, '{"city": "Paris"}', "}"),
        ("required", '[{"name": "get_weather", "parameters": {"city": "Paris"}}]', "}}]"),
    ],
    ids=["named", "required"],
)
def test_named_and_required_tool_calls_stream(client, monkeypatch, choice, script, stop):
    monkeypatch.setattr(server_fakes, "SCRIPT", script)
    calls, events = streamed_calls(
        client, tool_choice=choice, stop=[stop], include_stop_str_in_output=True
    )
    assert calls == [{"name": "get_weather", "arguments": '{"city": "Paris"}'}]
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"
    if choice != "required":  # the arguments stream in fragments as the text comes
        fragments = [
            d for e in events for c in e["choices"] for d in c["delta"].get("tool_calls") or []
        ]
        assert len(fragments) > 2


def ask_body(**kw):
    body = {"messages": MSGS, "tools": [WEATHER], "max_tokens": 200, "stop": ["</tool_call>"]}
    return body | kw


def test_tool_messages_reach_the_template(hermes_client, engine):
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    msgs = [
        *MSGS,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    r = ask(hermes_client, messages=msgs, tool_choice="none", max_tokens=20)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["tool_calls"] == []  # "none": the text stays text
    assert "sunny" in engine.tokenizer.decode(engine.requests[-1][0])


@pytest.mark.parametrize(
    "kw,param",
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": None, "tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools.0.function.name",
        ),
    ],
)
def test_bad_tool_requests_are_400(hermes_client, kw, param):
    r = ask(hermes_client, **kw)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_auto_needs_the_server_flags(client):
    r = ask(client)
    assert r.status_code == 400 and "--enable-auto-tool-choice" in r.json()["error"]["message"]
