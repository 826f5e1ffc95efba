"""Tool-call parsers, named as vLLM's --tool-call-parser: each finds the calls a model family
writes in its own format and returns the text around them and (name, arguments JSON) pairs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

ParsedCalls = tuple[str | None, list[tuple[str, str]]]


def _call(obj: object, args_key: str) -> tuple[str, str] | None:
    """{"name": ..., args_key: {...}} -> (name, arguments as JSON text); None for anything else."""
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", {}))
    return obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)


def _decode_all(text: str) -> list[object] | None:
    """Consecutive JSON values in text (separated by whitespace, ';' or ','); None if not only that."""
    decoder, i = json.JSONDecoder(), 0
    values: list[object] = []
    while True:
        while i < len(text) and text[i] in " \t\r\n;,":
            i += 1
        if i == len(text):
            return values
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return None
        values.append(value)


HERMES_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def parse_hermes(text: str) -> ParsedCalls:
    """Qwen 2.5 / 3, Hermes: <tool_call>{"name": ..., "arguments": {...}}</tool_call>, repeated."""
    if "<tool_call>" not in text:
        return text, []
    calls = []
    for body in HERMES_CALL.findall(text):
        values = _decode_all(body)
        call = _call(values[0], "arguments") if values and len(values) == 1 else None
        if call is None:
            return text, []  # not a well-formed call: the text stays text
        calls.append(call)
    content = text[: text.index("<tool_call>")].strip()
    return content or None, calls


def parse_llama3_json(text: str) -> ParsedCalls:
    """Llama 3.x: the whole reply is {"name": ..., "parameters": {...}}, several joined by ';',
    after an optional <|python_tag|>."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
    if not body.startswith("{"):
        return text, []
    values = _decode_all(body)
    calls = [_call(v, "parameters") for v in values or []]
    if not calls or None in calls:
        return text, []
    return None, calls  # type: ignore[return-value]


def parse_mistral(text: str) -> ParsedCalls:
    """Mistral: [TOOL_CALLS] then a JSON list of {"name": ..., "arguments": {...}}."""
    if "[TOOL_CALLS]" not in text:
        return text, []
    content, _, body = text.partition("[TOOL_CALLS]")
    values = _decode_all(body.strip())
    items = values[0] if values and len(values) == 1 and isinstance(values[0], list) else values
    calls = [_call(v, "arguments") for v in items or []]
    if not calls or None in calls:
        return text, []
    return content.strip() or None, calls  # type: ignore[return-value]


TOOL_CALL_PARSERS: dict[str, Callable[[str], ParsedCalls]] = {
    "hermes": parse_hermes,
    "llama3_json": parse_llama3_json,
    "mistral": parse_mistral,
}
