"""What a chat request's tools and tool_choice ask of the generation and of its reply: nothing
("none"), the server's parser reading the model's own calls ("auto"), or a grammar that holds the
reply to one call of a named function ("named") or to a list of calls ("required")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pagoda.engine.server.errors import APIError
from pagoda.engine.server.protocol import (
    ChatCompletionRequest,
    FunctionCall,
    NamedToolChoice,
    Tool,
    ToolCall,
)
from pagoda.engine.server.tools.parsers import TOOL_CALL_PARSERS, ParsedCalls
from pagoda.engine.structured.params import StructuredOutputsParams

EMPTY_PARAMETERS = {"type": "object", "properties": {}}


@dataclass
class ToolPlan:
    kind: Literal["none", "auto", "named", "required"]
    constraint: StructuredOutputsParams | None = None
    parse: Callable[[str], ParsedCalls] | None = None  # "auto": the server's parser
    name: str | None = None  # "named": the function

    def reply(
        self, text: str, finish_reason: str | None
    ) -> tuple[str | None, list[ToolCall], str | None]:
        """(content, tool_calls, finish_reason) of a finished choice's text."""
        if self.kind == "none" or finish_reason != "stop":
            return text, [], finish_reason
        if self.kind == "named":
            return None, [tool_call(self.name or "", text)], "tool_calls"
        if self.kind == "required":
            calls = [
                tool_call(c["name"], json.dumps(c["parameters"], ensure_ascii=False))
                for c in json.loads(text)
            ]
            return None, calls, "tool_calls"
        content, parsed = self.parse(text) if self.parse else (text, [])
        if not parsed:
            return text, [], finish_reason
        return content, [tool_call(name, args) for name, args in parsed], "tool_calls"


def tool_call(name: str, arguments: str) -> ToolCall:
    return ToolCall(
        id=f"chatcmpl-tool-{uuid.uuid4().hex}",
        function=FunctionCall(name=name, arguments=arguments),
    )


def plan_tools(body: ChatCompletionRequest, parser: str | None) -> ToolPlan:
    """APIError 400 for a choice the request or the server cannot honour."""
    if not body.tools:
        if body.tool_choice not in (None, "none"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        return ToolPlan("none")
    names = [t.function.name for t in body.tools]
    if len(set(names)) != len(names):
        raise APIError(400, f"tools: function names must be unique, got {names}", param="tools")
    choice = body.tool_choice or "auto"
    if choice == "none":
        return ToolPlan("none")
    if choice == "auto":
        if parser is None:
            raise APIError(
                400,
                '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser '
                "to be set",
                param="tool_choice",
            )
        return ToolPlan("auto", parse=TOOL_CALL_PARSERS[parser])
    if isinstance(choice, NamedToolChoice):
        tool = next((t for t in body.tools if t.function.name == choice.function.name), None)
        if tool is None:
            raise APIError(
                400,
                f"tool_choice names {choice.function.name!r}, which is not among tools {names}",
                param="tool_choice",
            )
        return ToolPlan(
            "named", StructuredOutputsParams(json=parameters(tool)), name=tool.function.name
        )
    return ToolPlan(
        "required", StructuredOutputsParams(json=calls_schema(body.tools, body.parallel_tool_calls))
    )


def parameters(tool: Tool) -> dict[str, Any]:
    return tool.function.parameters or EMPTY_PARAMETERS


def calls_schema(tools: list[Tool], parallel: bool) -> dict[str, Any]:
    """A JSON list of one or more {"name", "parameters"} objects, each one of the tools' (vLLM's
    form for tool_choice "required")."""
    one_of = [
        {
            "type": "object",
            "properties": {"name": {"enum": [t.function.name]}, "parameters": parameters(t)},
            "required": ["name", "parameters"],
        }
        for t in tools
    ]
    schema = {"type": "array", "minItems": 1, "items": {"anyOf": one_of}}
    if not parallel:
        schema["maxItems"] = 1
    return schema
