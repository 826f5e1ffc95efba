"""Per-request sampling parameters, named as vLLM names them, and the one error a bad one raises.

Bounds follow the sampler's arithmetic, not only the parameter's meaning: it computes in float32
on the device (a top_p of 1e-50 is 0 there) and packs integers into int64 tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pagoda.engine.structured.params import StructuredOutputsParams

F32_TINY = 1.1754943508222875e-38  # the least positive normal float32: below it, 0 or subnormal
F32_MAX = 3.4028234663852886e38
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class ParamError(ValueError):
    """A request parameter the engine cannot serve: an HTTP 400 naming `param`."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: off
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    max_tokens: int | None = 16  # None: up to max_model_len
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    logprobs: int | None = None  # number of top logprobs per generated token (0: only the chosen)
    prompt_logprobs: int | None = None
    logit_bias: dict[int, float] | None = None
    skip_special_tokens: bool = True
    detokenize: bool = True  # off: token ids only (benchmarks), no text, no stop strings
    # "cumulative": an output every step the request gains tokens (streaming); "final_only": one
    # output when it finishes (offline generation: no per-step cost). vLLM's RequestOutputKind.
    output_kind: Literal["cumulative", "final_only"] = "cumulative"
    use_beam_search: bool = False
    best_of: int | None = None
    length_penalty: float = 1.0
    structured_outputs: StructuredOutputsParams | None = None  # a grammar the output must match
    allowed_token_ids: list[int] | None = None  # only these tokens may be generated
    bad_words: list[str] = field(default_factory=list)  # words the output must not contain
    # Set by the engine from bad_words and its tokenizer (vLLM's _bad_words_token_ids).
    bad_words_token_ids: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.top_k == -1:
            self.top_k = 0
        self.validate()

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5

    def validate(self) -> None:
        """Raise ParamError naming the first parameter out of bounds."""
        within("n", self.n, 1, I64_MAX, "at least 1")
        within("temperature", self.temperature, 0.0, F32_MAX, "non-negative and finite in float32")
        within("top_p", self.top_p, F32_TINY, 1.0, "(0, 1], at least 1.2e-38 (float32)")
        within("top_k", self.top_k, 0, I64_MAX, "-1 (disable) or in [1, 2**63)")
        within("min_p", self.min_p, 0.0, 1.0)
        within("presence_penalty", self.presence_penalty, -2.0, 2.0)
        within("frequency_penalty", self.frequency_penalty, -2.0, 2.0)
        # It divides positive logits and multiplies negative ones: near 0 or huge, float32 logits
        # overflow to inf (then NaN in the softmax), and the sampler's pick leaves the vocabulary.
        within("repetition_penalty", self.repetition_penalty, 1e-4, 1e4)
        if self.seed is not None:  # torch seeds are 64-bit; sequence i of n takes seed + i
            within("seed", self.seed, I64_MIN, I64_MAX - self.n, "a 64-bit integer")
        if self.max_tokens is not None:
            within("max_tokens", self.max_tokens, 1, I64_MAX, "at least 1")
        within("min_tokens", self.min_tokens, 0, self.max_tokens or I64_MAX, "in [0, max_tokens]")
        if self.logprobs is not None:
            within("logprobs", self.logprobs, 0, 20)
        if self.prompt_logprobs is not None:
            within("prompt_logprobs", self.prompt_logprobs, 0, 20)
        for token, bias in (self.logit_bias or {}).items():
            within("logit_bias", token, 0, I64_MAX, "token ids, non-negative")
            within("logit_bias", bias, -100.0, 100.0)
        for token in self.stop_token_ids:
            within("stop_token_ids", token, 0, I64_MAX, "token ids, non-negative")
        if self.stop and not self.detokenize:
            raise ParamError("stop", "stop strings need detokenize=True")
        if self.allowed_token_ids is not None and not self.allowed_token_ids:
            raise ParamError("allowed_token_ids", "allowed_token_ids must not be empty")
        if self.best_of is not None and self.best_of != self.n and not self.use_beam_search:
            raise ParamError(
                "best_of", "best_of other than n needs use_beam_search (the beam width)"
            )
        if self.best_of is not None and self.best_of < self.n:
            raise ParamError("best_of", f"best_of ({self.best_of}) must be at least n ({self.n})")


def within(name: str, value: float, low: float, high: float, accepted: str | None = None) -> None:
    """ParamError unless low <= value <= high (NaN is not)."""
    if not low <= value <= high:
        raise ParamError(name, f"{name} must be {accepted or f'in [{low}, {high}]'}, got {value}")
