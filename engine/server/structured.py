"""A request's output constraint, from OpenAI's `response_format` or vLLM's `structured_outputs`
and `guided_*` fields, as one StructuredOutputsParams (or None); at most one of them may be given."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pagoda.engine.server.errors import APIError
from pagoda.engine.structured.params import StructuredOutputsParams


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = "response"
    description: str | None = None
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputsField(BaseModel):
    """vLLM's `structured_outputs` request field."""

    model_config = ConfigDict(extra="forbid")
    json_: dict[str, Any] | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool | None = None


def structured_outputs(engine: Any, body: Any) -> StructuredOutputsParams | None:
    """The constraint of a chat or completion request, compiled (cached for the engine) so that a
    bad schema, regex or grammar is a 400 before any response starts; APIError 400 naming the
    field for a malformed one."""
    asked: list[tuple[str, dict[str, Any]]] = []
    fmt: ResponseFormat | None = getattr(body, "response_format", None)
    if fmt is not None and fmt.type == "json_object":
        asked.append(("response_format", {"json_object": True}))
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.json_schema is None:
            raise APIError(
                400,
                "response_format: type json_schema needs json_schema.schema",
                param="response_format",
            )
        asked.append(("response_format", {"json": fmt.json_schema.json_schema}))
    so: StructuredOutputsField | None = getattr(body, "structured_outputs", None)
    if so is not None:
        kw = so.model_dump(by_alias=True, exclude_none=True)
        whitespace = kw.pop("disable_any_whitespace", None)
        if whitespace is not None:
            kw["any_whitespace"] = not whitespace
        asked.append(("structured_outputs", kw))
    for field, key in (
        ("guided_json", "json"),
        ("guided_regex", "regex"),
        ("guided_choice", "choice"),
        ("guided_grammar", "grammar"),
    ):
        value = getattr(body, field, None)
        if value is not None:
            asked.append((field, {key: value}))
    if not asked:
        return None
    if len(asked) > 1:
        names = ", ".join(name for name, _ in asked)
        raise APIError(400, f"give one output constraint, got {names}", param=asked[1][0])
    param, kw = asked[0]
    try:
        params = StructuredOutputsParams(**kw)
    except ValueError as e:
        raise APIError(400, f"{param}: {e}", param=param) from None
    check_structured_outputs(engine, params, param)
    return params


def check_structured_outputs(
    engine: Any, params: StructuredOutputsParams | None, param: str = "response_format"
) -> None:
    """Compile now (cached for the engine): APIError 400 naming `param` if it cannot be."""
    structured = getattr(engine, "structured", None)
    if params is None or structured is None:
        return
    try:
        structured.compile(params)
    except ValueError as e:
        raise APIError(400, f"{param}: {e}", param=param) from None
