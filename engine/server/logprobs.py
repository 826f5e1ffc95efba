"""The engine's per-token {token_id: logprob} dicts in OpenAI's two logprob shapes."""

from __future__ import annotations

from typing import Any

from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.server.protocol import (
    ChatLogprobs,
    CompletionLogprobs,
    PromptLogprob,
    PromptLogprobs,
    TokenLogprob,
    TopLogprob,
)


def token_text(tokenizer: Any, token_id: int) -> str:
    text: str = tokenizer.decode([token_id])
    return text


def finite(lp: float) -> float:
    # -inf (a token masked out by top-p or logit_bias) is not valid JSON; vLLM clamps the same way.
    return max(lp, -9999.0)


def top(step: TokenLogprobs, k: int) -> list[tuple[int, float]]:
    return sorted(step.items(), key=lambda kv: kv[1], reverse=True)[:k]


def chat_logprobs(
    tokenizer: Any, token_ids: list[int], steps: list[TokenLogprobs], k: int
) -> ChatLogprobs:
    def entry(tid: int, lp: float) -> TopLogprob:
        text = token_text(tokenizer, tid)
        return TopLogprob(token=text, logprob=finite(lp), bytes=list(text.encode()))

    content = []
    for tid, step in zip(token_ids, steps):
        chosen = entry(tid, step[tid])
        content.append(
            TokenLogprob(
                **chosen.model_dump(), top_logprobs=[entry(t, lp) for t, lp in top(step, k)]
            )
        )
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: Any,
    token_ids: list[int],
    steps: list[TokenLogprobs | None],
    k: int,
    offset: int = 0,
) -> CompletionLogprobs:
    """`offset`: where this piece starts in the choice's text (for streamed chunks). A step of
    None (the first prompt token, echoed) has no logprob."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for tid, step in zip(token_ids, steps):
        text = token_text(tokenizer, tid)
        out.tokens.append(text)
        out.token_logprobs.append(None if step is None else finite(step[tid]))
        out.top_logprobs.append(
            {token_text(tokenizer, t): finite(lp) for t, lp in top(step, k)}
            if k and step is not None
            else None
        )
        out.text_offset.append(offset)
        offset += len(text)
    return out


def prompt_logprobs(tokenizer: Any, steps: list[TokenLogprobs | None]) -> PromptLogprobs:
    """vLLM's prompt_logprobs: per prompt token None or {token id: {logprob, rank, decoded_token}},
    ranked by logprob (the top k are exact; the prompt's own token below them is ranked k + 1)."""
    out: PromptLogprobs = []
    for step in steps:
        if step is None:
            out.append(None)
            continue
        ranked = sorted(step.items(), key=lambda kv: kv[1], reverse=True)
        out.append(
            {
                str(t): PromptLogprob(
                    logprob=finite(lp), rank=rank, decoded_token=token_text(tokenizer, t)
                )
                for rank, (t, lp) in enumerate(ranked, start=1)
            }
        )
    return out
