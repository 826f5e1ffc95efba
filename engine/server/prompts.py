"""From a request to prompt token ids (request_rules checks them against the model).

Rendering a template and tokenizing a long prompt take CPU time in proportion to the request:
`off_loop` runs them on a worker thread, so that /health and other requests never wait on them.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pagoda.engine.server.errors import APIError
from pagoda.engine.server.protocol import ChatMessage

T = TypeVar("T")
PREPARE_TIMEOUT_S = 10.0
# Keys that are apply_chat_template's own parameters, not variables for the template: a request
# must not switch tokenization or the output format through them.
RESERVED_TEMPLATE_KWARGS = frozenset(
    {
        "conversation",
        "tokenize",
        "add_generation_prompt",
        "continue_final_message",
        "padding",
        "truncation",
        "max_length",
        "return_tensors",
        "return_dict",
        "return_assistant_tokens_mask",
        "tokenizer_kwargs",
    }
)


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on a worker thread, bounded by PREPARE_TIMEOUT_S (then a 400; the thread
    finishes on its own: only the server's templates, or trusted ones, run there)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(work, *args), PREPARE_TIMEOUT_S)
    except TimeoutError:
        raise APIError(
            400,
            f"Preparing the prompt took longer than {PREPARE_TIMEOUT_S:.0f}s",
            code="prompt_timeout",
        ) from None


def check_template_kwargs(kwargs: dict[str, Any] | None, trust_request_template: bool) -> None:
    for key in kwargs or {}:
        if key in RESERVED_TEMPLATE_KWARGS:
            raise APIError(
                400,
                f"chat_template_kwargs may not set {key!r}",
                param=f"chat_template_kwargs.{key}",
            )
    if "chat_template" in (kwargs or {}) and not trust_request_template:
        raise APIError(
            400,
            "A request's own chat template is refused: the server runs without "
            "--trust-request-chat-template",
            param="chat_template_kwargs.chat_template",
        )


def render_chat(
    tokenizer: Any,
    max_model_len: int,
    messages: list[ChatMessage],
    add_generation_prompt: bool = True,
    chat_template_kwargs: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    """Apply the model's chat template (with the request's tools, in transformers' Jinja sandbox),
    then tokenize without adding special tokens again. The caller has passed chat_template_kwargs
    through check_template_kwargs."""
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
    return encode(tokenizer, max_model_len, text, add_special_tokens=False)


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


def encode(
    tokenizer: Any, max_model_len: int, text: str, add_special_tokens: bool = True
) -> list[int]:
    """Token ids of `text`; a 400 without tokenizing when it cannot fit the context whatever
    its tokens (tokenizing megabytes takes many seconds of CPU)."""
    if len(text) > max_model_len * longest_token_chars(tokenizer):
        raise APIError(
            400,
            f"The prompt ({len(text)} characters) is longer than any {max_model_len}-token "
            "context; shorten it",
            param="prompt",
        )
    try:
        return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
    except Exception as e:  # e.g. lone surrogates in the JSON string
        raise APIError(400, f"Cannot tokenize the prompt: {e}", param="prompt") from None


@functools.lru_cache(maxsize=16)
def longest_token_chars(tokenizer: Any) -> int:
    """The most characters one token of the vocabulary covers: a text of n characters has at
    least n / this many tokens (byte-level pieces count bytes, at least one per character)."""
    return max(len(piece) for piece in tokenizer.get_vocab())


def completion_prompts(
    tokenizer: Any, max_model_len: int, prompt: str | list[str] | list[int] | list[list[int]]
) -> list[list[int]]:
    """OpenAI's four prompt forms (text, texts, token ids, lists of token ids) as token id lists."""
    if isinstance(prompt, str):
        prompts = [encode(tokenizer, max_model_len, prompt)]
    elif prompt and all(isinstance(p, int) for p in prompt):
        prompts = [list(cast("list[int]", prompt))]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [encode(tokenizer, max_model_len, cast(str, p)) for p in prompt]
    else:
        prompts = [list(cast("list[int]", p)) for p in prompt]
    if not prompts:
        raise APIError(400, "prompt must not be an empty list", param="prompt")
    return prompts
