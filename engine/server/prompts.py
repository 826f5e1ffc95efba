"""From a request to prompt token ids (request_rules checks them against the model)."""

from __future__ import annotations

from typing import Any

from pagoda.engine.server.errors import APIError
from pagoda.engine.server.protocol import ChatMessage


def render_chat(
    tokenizer: Any,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> list[int]:
    """Apply the model's chat template, then tokenize without adding special tokens again."""
    if not getattr(tokenizer, "chat_template", None):
        raise APIError(400, "This model has no chat template; use /v1/completions")
    conversation = [
        {"role": m.role, "content": m.text()} | ({"name": m.name} if m.name else {})
        for m in messages
    ]
    try:
        text = tokenizer.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **(chat_template_kwargs or {}),
        )
    except Exception as e:  # the template's own raise_exception(), a bad kwarg, ...
        raise APIError(400, f"Chat template failed: {e}", param="messages") from None
    return encode(tokenizer, text, add_special_tokens=False)


def encode(tokenizer: Any, text: str, add_special_tokens: bool = True) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    except Exception as e:  # e.g. lone surrogates in the JSON string
        raise APIError(400, f"Cannot tokenize the prompt: {e}", param="prompt") from None


def completion_prompts(
    tokenizer: Any, prompt: str | list[str] | list[int] | list[list[int]]
) -> list[list[int]]:
    """OpenAI's four prompt forms (text, texts, token ids, lists of token ids) as token id lists."""
    if isinstance(prompt, str):
        prompts = [encode(tokenizer, prompt)]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [encode(tokenizer, p) for p in prompt]
    else:
        prompts = [list(p) for p in prompt]
    if not prompts:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    return prompts
