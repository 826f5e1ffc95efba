"""What a request still open at the drain's deadline is answered, so that none ends silently.

A stream ends as the engine ends its own at its drain deadline: a chunk that closes each of its
choices with finish_reason "abort" (vLLM's), then `data: [DONE]`. The chunk copies the id,
object, created and model of the stream's first event; a stream with no event yet gets an error
event in OpenAI's shape instead. A request with nothing sent back yet gets a 503.
"""

from __future__ import annotations

import json
from typing import Any

from pagoda.gateway.errors import GatewayError

MESSAGE = "The gateway shut down before the request finished"
CODE = "shutting_down"


def shutting_down() -> GatewayError:
    return GatewayError(503, MESSAGE, code=CODE, retry_after=1)


def choices(body: dict[str, Any]) -> int:
    """How many choices the request's stream carries: n per prompt (completions take a batch)."""
    n = body.get("n")
    prompt = body.get("prompt")
    prompts = len(prompt) if isinstance(prompt, list) and prompt and not _is_ids(prompt) else 1
    return (n if isinstance(n, int) and n > 0 else 1) * prompts


def last_events(first: bytes, last: bytes, choices: int) -> bytes:
    """The end of a stream cut at the deadline. `first` and `last`: the first and the latest
    chunk the client got (an unfinished event in `last` is ended first, so it cannot swallow
    ours)."""
    head = _first_event(first)
    if head is None:
        event: dict[str, Any] = {
            "error": {"message": MESSAGE, "type": "service_unavailable", "param": None,
                      "code": CODE}
        }  # fmt: skip
    else:
        chat = head.get("object") == "chat.completion.chunk"
        event = {k: head[k] for k in ("id", "object", "created", "model") if k in head}
        event["choices"] = [
            {"index": i, "delta": {}, "finish_reason": "abort"}
            if chat
            else {"index": i, "text": "", "finish_reason": "abort"}
            for i in range(choices)
        ]
    end = b"" if not last or last.endswith(b"\n\n") else b"\n\n"
    return end + b"data: " + json.dumps(event).encode() + b"\n\ndata: [DONE]\n\n"


def _first_event(chunk: bytes) -> dict[str, Any] | None:
    line = chunk.split(b"\n\n", 1)[0]
    if not line.startswith(b"data: {"):
        return None
    try:
        event = json.loads(line[len(b"data: ") :])
    except ValueError:  # the chunk ended inside the event
        return None
    return event if isinstance(event, dict) and "choices" in event else None


def _is_ids(prompt: list[Any]) -> bool:
    return isinstance(prompt[0], int)
