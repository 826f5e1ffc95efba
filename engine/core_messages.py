"""What crosses between the API process and the engine core: msgspec structs over ZeroMQ (or, in
one process, handed over as they are).

In: requests to add (already tokenized and checked), aborts, sequences a stop string ended. Out:
per step, each touched sequence's new tokens and how it ended, with the scheduler's stats; the
text is made on the API side from the token ids.
"""

from __future__ import annotations

import msgspec

from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

# The stop_reason of a sequence ended (finish_reason "abort") because its grammar allowed no token.
GRAMMAR_DEAD_END = "structured output: the grammar allows no further token"


class EngineCoreRequest(msgspec.Struct, tag=True, array_like=True):
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams  # max_tokens resolved: never None here
    arrival_time: float  # time.monotonic() in the API process (one clock for both processes)
    priority: int = 0
    cache_salt: str | None = None
    # An embedding request (--runner pooling), resolved against the model's pooler config; its
    # `params` then sample one token, which is dropped.
    pooling: PoolingParams | None = None
    lora_request: LoRARequest | None = None  # checked on the API side; None: the base model


class Abort(msgspec.Struct, tag=True, array_like=True):
    request_ids: list[str]


class StopSequences(msgspec.Struct, tag=True, array_like=True):
    """Sequences (request id, index) a stop string ended on the API side: the core frees them."""

    sequences: list[tuple[str, int]]


class Shutdown(msgspec.Struct, tag=True, array_like=True):
    pass


ToCore = EngineCoreRequest | Abort | StopSequences | Shutdown


class Hypothesis(msgspec.Struct, array_like=True):
    """One of a finished beam search's best: its tokens, score and how it ended."""

    token_ids: list[int]
    logprob: float
    finish_reason: str


class EngineCoreOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one sequence of a request gained in a step (n > 1: one per sequence, by index): one
    token, or several where speculative decoding verified drafts."""

    request_id: str
    index: int
    new_token_ids: list[int]
    new_logprobs: list[TokenLogprobs] | None = None  # the top logprobs of each new token
    cumulative_logprob: float | None = None
    finish_reason: str | None = None  # "stop" (EOS, stop token), "length", "abort", "error"
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    first_scheduled_time: float | None = None
    beams: list[Hypothesis] | None = None  # beam search, once done: the n best
    # SamplingParams.prompt_logprobs: sent once, in the step that completes the prompt.
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    pooled: bytes | None = None  # a finished embedding request's vector (float32)


class LoRAStats(msgspec.Struct, array_like=True):
    """vllm:lora_requests_info's labels: the adapters of running and of waiting requests."""

    max_loras: int
    running: list[str]
    waiting: list[str]


class SchedulerStats(msgspec.Struct, array_like=True):
    """Gauges as of the step, and counters' increments since the previous stats."""

    num_running: int = 0
    num_waiting: int = 0  # waiting and swapped out
    kv_cache_usage: float = 0.0
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    # Speculative decoding: (tokens proposed, tokens accepted) of each draft verified.
    spec_drafts: list[tuple[int, int]] = msgspec.field(default_factory=list)
    lora: LoRAStats | None = None  # with --enable-lora


class EngineCoreOutputs(msgspec.Struct, tag=True, array_like=True):
    outputs: list[EngineCoreOutput]
    stats: SchedulerStats
    timestamp: float  # time.monotonic() in the core when the step's tokens were taken in


class CoreInfo(msgspec.Struct, tag=True, array_like=True):
    """The core is ready: what the API process needs to check and process requests."""

    max_model_len: int
    vocab_size: int | None  # None: a test's fake runner (no token id range to check)
    eos_token_ids: list[int]
    num_blocks: int
    # The API side checks a request's LoRA adapter against it; None: a test's fake runner.
    model_config: ModelConfig | None = None


class CoreFailed(msgspec.Struct, tag=True, array_like=True):
    error: str
    # At start, "ModelLoadError" (a bad model source) or "ValueError" (a bad option): raised as
    # such in the API process, a one-line error; "" for anything else.
    error_type: str = ""


FromCore = EngineCoreOutputs | CoreInfo | CoreFailed
