"""The routing key of the prefix policy: the leading characters of the prompt as the engine will
render it (chat: each message's role and text in order; completions: the prompt).

Characters stand in for the engine's leading KV blocks: the gateway has no tokenizer, and equal
leading text renders to equal leading tokens, so equal keys mean shared cache blocks.
"""

from __future__ import annotations

from typing import Any


def prefix_key(body: dict[str, Any], chars: int) -> str | None:
    text = _leading_text(body, chars)
    return text[:chars] if text else None


def _leading_text(body: dict[str, Any], chars: int) -> str:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        size = 0
        for m in messages:
            if not isinstance(m, dict):
                break
            piece = f"<{m.get('role')}>{_content_text(m.get('content'))}"
            parts.append(piece)
            size += len(piece)
            if size >= chars:
                break
        return "".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, list):  # a batch of prompts, or one prompt as token ids
        prompt = prompt[0] if prompt and not isinstance(prompt[0], int) else prompt
    if isinstance(prompt, list):
        return ",".join(str(t) for t in prompt[:chars])
    return prompt if isinstance(prompt, str) else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: the text ones carry the prefix
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""
