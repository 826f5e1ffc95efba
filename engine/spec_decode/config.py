"""--speculative-config: vLLM's JSON (or LLM(speculative_config={...})'s dict), checked at start.

vLLM's keys: `method` ("ngram" or "draft_model"; a `model` of "ngram" / "[ngram]" also means
ngram, and a `model` without a method means draft_model), `num_speculative_tokens` (k), and for
ngram `prompt_lookup_min` / `prompt_lookup_max` (one given: both take it; none: both 5, as vLLM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeGuard

METHODS = ("ngram", "draft_model")
# A verified step computes k + 1 tokens per sequence; past a few tokens acceptance falls off
# geometrically, so a larger k only costs compute. vLLM sets no bound; this one keeps a typo out.
MAX_SPECULATIVE_TOKENS = 16
KEYS = {"method", "model", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max"}


@dataclass(frozen=True)
class SpeculativeConfig:
    method: Literal["ngram", "draft_model"]
    num_speculative_tokens: int
    prompt_lookup_min: int = 5
    prompt_lookup_max: int = 5
    model: str | None = None  # the draft model (method draft_model)


def parse_speculative_config(given: dict[str, Any]) -> SpeculativeConfig:
    """ValueError, with the reason in one line, for anything Pagoda would not run as asked."""
    if not isinstance(given, dict):
        raise ValueError(f"speculative_config must be a JSON object, got {given!r}")
    unknown = set(given) - KEYS
    if unknown:
        raise ValueError(
            f"speculative_config: unsupported key(s) {sorted(unknown)}; supported: {sorted(KEYS)}"
        )
    model = given.get("model")
    method = given.get("method")
    if method is None:
        method = "ngram" if model in ("ngram", "[ngram]") else "draft_model" if model else None
    if method not in METHODS:
        raise ValueError(
            f"speculative_config: method {method!r} is not supported; use one of {list(METHODS)}"
        )
    k = given.get("num_speculative_tokens")
    if not _is_int(k) or not 1 <= k <= MAX_SPECULATIVE_TOKENS:
        raise ValueError(
            "speculative_config: num_speculative_tokens must be an integer in "
            f"1..{MAX_SPECULATIVE_TOKENS}, got {k!r}"
        )
    if method == "draft_model":
        if not isinstance(model, str) or not model:
            raise ValueError("speculative_config: method draft_model needs `model` (the draft)")
        if "prompt_lookup_min" in given or "prompt_lookup_max" in given:
            raise ValueError("speculative_config: prompt_lookup_min/_max are for method ngram")
        return SpeculativeConfig("draft_model", k, model=model)
    low, high = given.get("prompt_lookup_min"), given.get("prompt_lookup_max")
    low, high = (low if low is not None else high), (high if high is not None else low)
    low, high = (5 if low is None else low), (5 if high is None else high)
    if not (_is_int(low) and _is_int(high) and 1 <= low <= high):
        raise ValueError(
            "speculative_config: prompt_lookup_min and prompt_lookup_max must be integers with "
            f"1 <= min <= max, got {low!r} and {high!r}"
        )
    return SpeculativeConfig("ngram", k, low, high)


def _is_int(x: object) -> TypeGuard[int]:
    return isinstance(x, int) and not isinstance(x, bool)
