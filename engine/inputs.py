"""The prompt forms of vLLM's offline API (`vllm.inputs`): a string, token ids, or a dict."""

from __future__ import annotations

from typing import TypedDict


class TextPrompt(TypedDict):
    prompt: str


class TokensPrompt(TypedDict):
    prompt_token_ids: list[int]


PromptType = str | list[int] | TextPrompt | TokensPrompt


def prompt_of(prompt: PromptType) -> str | list[int]:
    """What the engine takes: text, or token ids. TypeError for anything else."""
    if isinstance(prompt, dict):
        fields: dict = dict(prompt)
        if "prompt_token_ids" in fields:
            return list(fields["prompt_token_ids"])
        if "prompt" in fields:
            return fields["prompt"]
        raise TypeError(f"a dict prompt needs 'prompt' or 'prompt_token_ids', got {sorted(prompt)}")
    if isinstance(prompt, str) or (
        isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
    ):
        return prompt
    raise TypeError(
        f"a prompt is a string, a list of token ids or a dict, got {type(prompt).__name__}"
    )


def is_single(prompts: object) -> bool:
    """One prompt (not a list of them): a string, a dict, or a flat list of token ids."""
    return isinstance(prompts, (str, dict)) or (
        isinstance(prompts, list) and bool(prompts) and isinstance(prompts[0], int)
    )
