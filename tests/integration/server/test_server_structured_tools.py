"""Structured outputs and tool calling in a real `pagoda serve` with the default model, driven by
clients nobody here wrote: the official `openai` package (sync, async, streaming) and LangChain's
ChatOpenAI (a tool-calling round trip and a JSON-schema call)."""

from __future__ import annotations

import asyncio
import json

import jsonschema
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.integration

MODEL, MAX_LEN = "smol", 1024
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "height_m": {"type": "number"},
        "role": {"enum": ["admin", "user", "guest"]},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
        },
    },
    "required": ["name", "age", "height_m", "role", "skills", "address"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
ASK_PERSON = [{"role": "user", "content": "Describe a software engineer as a JSON object."}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(
        "--served-model-name",
        MODEL,
        "--max-model-len",
        str(MAX_LEN),
        "--max-num-seqs",
        "8",
        "--async-scheduling",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)


def test_json_schema_response_parses_and_validates(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ASK_PERSON,
        max_tokens=200,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": PERSON, "strict": True},
        },
    )
    choice = r.choices[0]
    assert choice.finish_reason == "stop", choice
    jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_with_n_2_async(server):
    async def ask():
        async with openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300
        ) as aclient:
            return await aclient.chat.completions.create(
                model=MODEL,
                messages=ASK_PERSON,
                max_tokens=120,
                n=2,
                temperature=0.8,
                seed=1,
                response_format={"type": "json_object"},
            )

    r = asyncio.run(ask())
    assert len(r.choices) == 2
    for choice in r.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)


def test_guided_choice_and_regex(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Is Paris in France?"}],
        max_tokens=10,
        temperature=0,
        extra_body={"guided_choice": ["yes", "no"]},
    )
    assert r.choices[0].message.content in ("yes", "no")
    r = client.completions.create(
        model=MODEL,
        prompt="A phone number:",
        max_tokens=20,
        temperature=0,
        extra_body={"structured_outputs": {"regex": r"\d{3}-\d{4}"}},
    )
    text = r.choices[0].text
    assert len(text) == 8 and text[3] == "-" and text.replace("-", "").isdigit(), text


def test_beam_search_over_http(client):
    r = client.completions.create(
        model=MODEL,
        prompt="The capital of France is",
        max_tokens=4,
        n=2,
        temperature=0,
        extra_body={"use_beam_search": True, "best_of": 3},
    )
    assert len(r.choices) == 2 and all(c.text for c in r.choices)
    assert r.choices[0].text != r.choices[1].text


def test_required_tool_call(client):
    r = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=80,
        temperature=0,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_named_tool_call_streamed(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
        temperature=0,
        stream=True,
    )
    calls, finish = {}, None
    for chunk in stream:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and list(calls) == [0]
    assert calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


@pytest.mark.parametrize(
    "tool_choice",
    ["required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=["required", "named"],
)
def test_streamed_tool_call_deltas_in_openai_shape(client, tool_choice):
    """The SDK's stream helper puts the call together from the deltas; each call's first delta
    has its id, type and name, the later ones only arguments."""
    kw = dict(model=MODEL, messages=ASK_WEATHER, tools=[WEATHER], max_tokens=80, temperature=0)
    firsts, later = [], []
    with client.chat.completions.stream(
        **kw, tool_choice=tool_choice, parallel_tool_calls=False
    ) as stream:
        for event in stream:
            if event.type != "chunk":
                continue
            for d in (c.delta.tool_calls or [] for c in event.chunk.choices):
                for piece in d:
                    (later if firsts else firsts).append(piece)
        final = stream.get_final_completion()
    [first] = firsts
    assert first.index == 0 and first.id and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    assert later and all(p.id is None and p.function.name is None for p in later)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id == first.id and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


@pytest.mark.parametrize(
    "kw,param",
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object", "properties": 3}},
                }
            },
            "response_format",
        ),
        ({"extra_body": {"guided_regex": "a(b"}}, "guided_regex"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tools": [WEATHER]} | {"extra_body": {"unknown_field": 1}}, "unknown_field"),
    ],
)
def test_bad_constraints_are_400_with_the_reason(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=ASK_WEATHER, max_tokens=5, **kw)
    assert e.value.body["param"] == param, e.value.body


def test_langchain_tool_round_trip_and_json_schema(server):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return f"Sunny in {city}"

    llm = ChatOpenAI(
        base_url=f"{server.url}/v1", api_key="x", model=MODEL, temperature=0, max_tokens=60
    )
    question = HumanMessage("What is the weather in Paris?")
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke([question])
    [call] = ai.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    answer = llm.invoke([question, ai, result])
    assert isinstance(answer.content, str) and answer.content

    class City(BaseModel):
        name: str = Field(max_length=20)
        country: str = Field(max_length=20)
        is_capital: bool

    structured = llm.model_copy(update={"max_tokens": 200}).with_structured_output(
        City, method="json_schema", include_raw=True
    )
    out = structured.invoke("Describe Paris.")
    assert out["parsing_error"] is None, out["raw"]
    assert isinstance(out["parsed"], City)
