"""What the engine hands back: vLLM's RequestOutput / CompletionOutput shapes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine core builds these without importing torch itself
    import torch

# One generated position's logprobs: token id -> logprob, the chosen token always included.
TokenLogprobs = dict[int, float]


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]  # while running, the engine's own growing list: copy it to keep a snapshot
    cumulative_logprob: float | None = None
    logprobs: list[TokenLogprobs] | None = None
    finish_reason: str | None = None  # "stop" | "length" | "abort" | None while running
    stop_reason: int | str | None = None  # the stop string or token id that ended it

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    arrival_time: float
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None
    finished_time: float | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    # SamplingParams.prompt_logprobs: per prompt token, None for the first, then {token: logprob}
    # of the top k and the prompt's own token.
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    metrics: RequestMetrics | None = None
    # For streaming: the text / token ids each output gained since the previous RequestOutput.
    deltas: list[tuple[str, list[int]]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """The engine ended the request on an error of its own (finish_reason "error")."""
        return any(o.finish_reason == "error" for o in self.outputs)


@dataclass
class PoolingOutput:
    data: torch.Tensor | None  # float32 on the CPU; None when the request ended without one


@dataclass
class PoolingRequestOutput:
    """vLLM's: what an embedding request (--runner pooling) gives back."""

    request_id: str
    outputs: PoolingOutput
    prompt_token_ids: list[int]
    finished: bool
    num_cached_tokens: int = 0
    failed: bool = False  # the engine ended it on an error of its own


@dataclass
class EmbeddingOutput:
    embedding: list[float]


@dataclass
class EmbeddingRequestOutput:
    """vLLM's LLM.embed() output: `outputs.embedding` as a list of floats."""

    request_id: str
    outputs: EmbeddingOutput
    prompt_token_ids: list[int]
    finished: bool

    @classmethod
    def from_base(cls, out: PoolingRequestOutput) -> EmbeddingRequestOutput:
        assert out.outputs.data is not None, "a finished embedding request has its vector"
        return cls(
            out.request_id, EmbeddingOutput(out.outputs.data.tolist()), out.prompt_token_ids, True
        )
