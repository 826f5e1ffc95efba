"""From a request to prompt token ids, checked against the model before the engine sees them."""

from __future__ import annotations

import json
from typing import Any, cast

from pagoda.engine.server.errors import APIError
from pagoda.engine.server.protocol import ChatMessage


def render_chat(
    tokenizer: Any,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    chat_template_kwargs: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Apply the model's chat template (with the request's tools), then tokenize without adding
    special tokens again."""
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "This model has no chat template; use /v1/completions")
    conversation = [template_message(m) for m in messages]
    try:
        text = tokenizer.apply_chat_template(
            conversation,
            tools=tools,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **(chat_template_kwargs or {}),
        )
    except Exception as e:  # the template's own raise_exception(), a bad kwarg, ...
        raise APIError(400, f"Chat template failed: {e}", param="messages") from None
    return encode(tokenizer, text, add_special_tokens=False)


def template_message(m: ChatMessage) -> dict[str, Any]:
    """A message as chat templates read it: tool-call arguments as objects (the templates of Qwen,
    Llama, Mistral write them with tojson), as vLLM hands them over."""
    out: dict[str, Any] = {"role": m.role, "content": m.text()}
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": arguments(c.function.arguments)},
            }
            for c in m.tool_calls
        ]
    return out


def arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def encode(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    except Exception as e:  # e.g. lone surrogates in the JSON string
        raise APIError(400, f"Cannot tokenize the prompt: {e}", param="prompt") from None


def check_token_ids(tokenizer: Any, ids: list[int], param: str = "prompt") -> list[int]:
    vocab = len(tokenizer)
    bad = next((t for t in ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise APIError(400, f"Token id {bad} is out of range [0, {vocab})", param=param)
    return ids


def completion_prompts(
    tokenizer: Any, prompt: str | list[str] | list[int] | list[list[int]]
) -> list[list[int]]:
    """OpenAI's four prompt forms (text, texts, token ids, lists of token ids) as token id lists."""
    if isinstance(prompt, str):
        prompts = [encode(tokenizer, prompt)]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [check_token_ids(tokenizer, cast(list[int], prompt))]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [encode(tokenizer, cast(str, p)) for p in prompt]
    else:
        prompts = [check_token_ids(tokenizer, cast(list[int], p)) for p in prompt]
    if not prompts:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    return prompts


def fit_max_tokens(prompt_len: int, max_tokens: int | None, max_model_len: int) -> int:
    """The max_tokens to generate with; None fills the context. Too long a request is a 400."""
    if prompt_len == 0:
        raise APIError(400, "The prompt is empty", param="prompt")
    if max_tokens is not None and max_tokens < 1:
        raise APIError(400, f"max_tokens must be at least 1, got {max_tokens}", param="max_tokens")
    room = max_model_len - prompt_len
    if room < 1 or (max_tokens is not None and max_tokens > room):
        asked = f" plus {max_tokens} max_tokens" if max_tokens is not None else ""
        raise APIError(
            400,
            f"This model's maximum context length is {max_model_len} tokens; the request has "
            f"{prompt_len} prompt tokens{asked}. Shorten the prompt or lower max_tokens.",
            param="max_tokens" if room >= 1 else "prompt",
        )
    return room if max_tokens is None else max_tokens
