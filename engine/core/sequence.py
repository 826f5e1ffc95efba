"""A sequence: one stream of tokens the engine generates, with its place in the KV cache.

A request with n > 1 computes its prompt once, in its first sequence; the others wait in its
`forks` and, when it samples its first token, draw theirs from the same logits and fork from it,
sharing its blocks (copy-on-write). `Request` in llm_engine.py groups them back for output.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

if TYPE_CHECKING:  # the core holds the runner's tensors and grammars but never touches a device
    import torch

    from pagoda.engine.lora.request import LoRARequest
    from pagoda.engine.structured.backend import GrammarState

# A sampled token still on its way to the host (async scheduling): the next step already computes
# with it, the runner reading its value on the device; the engine fills it in when it arrives.
PENDING_TOKEN = -1


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"  # preempted, its blocks in the CPU pool
    FORKING = "forking"  # not yet started: forks from its parent at the parent's first token
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    seq_id: str
    request_id: str
    index: int  # which of the request's n outputs
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = 0
    arrival_time: float = field(default_factory=time.monotonic)
    cache_salt: str | None = None
    generator: torch.Generator | None = None
    grammar: GrammarState | None = None  # structured outputs: where its output is in the grammar
    lora_request: LoRARequest | None = None  # its adapter; None: the base model

    output_token_ids: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    # Tokens whose K/V are in the cache; the scheduler moves it forward, preemption resets it.
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens the prefix cache served at first schedule
    num_preemptions: int = 0
    # Its last token (by a length limit) is computing: it ends when that token arrives, so it is
    # not scheduled again (async scheduling schedules before the token is back).
    awaiting_last_token: bool = False
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(
        default_factory=list
    )  # chained hashes of this seq's full blocks
    cpu_block_table: list[int] = field(default_factory=list)  # while swapped out
    forks: list[Sequence] = field(default_factory=list)  # children to fork at the first token
    # A beam's next-token log-probabilities, held until every live beam of its group has them.
    beam_logprobs: torch.Tensor | None = None
    # An embedding request (--runner pooling): how to pool its prompt, and the vector, set by the
    # runner in the step that completes the prompt (its one sampled token is dropped).
    pooling: PoolingParams | None = None
    pooled: torch.Tensor | None = None
    # SamplingParams.prompt_logprobs: set by the runner once the prompt is computed.
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    # Speculative decoding: tokens proposed to follow it, verified in its next step (the scheduler
    # trims them to the budget; engine/spec_decode).
    spec_token_ids: list[int] = field(default_factory=list)

    cumulative_logprob: float = 0.0
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    first_scheduled_time: float | None = None
    first_token_time: float | None = None
    last_token_time: float | None = None

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    def token_ids(self, start: int = 0, end: int | None = None) -> list[int]:
        """Prompt and output tokens as one list, sliced without building the whole list."""
        n = len(self.prompt_token_ids)
        end = self.num_tokens if end is None else end
        if end <= n:
            return self.prompt_token_ids[start:end]
        if start >= n:
            return self.output_token_ids[start - n : end - n]
        return self.prompt_token_ids[start:] + self.output_token_ids[: end - n]

    def scheduled_token_ids(self, start: int, end: int) -> list[int]:
        """The tokens at positions start..end of a step's input: past its last token, its drafts."""
        if end <= self.num_tokens:
            return self.token_ids(start, end)
        return self.token_ids(start) + self.spec_token_ids[: end - self.num_tokens]

    @property
    def prefix_salt(self) -> tuple[str | None, int] | str | None:
        """What prefix-cache block hashes mix in: the cache salt, and the adapter (its K/V differ
        from the base model's for the same tokens: no block is shared across adapters)."""
        if self.lora_request is None:
            return self.cache_salt
        return (self.cache_salt, self.lora_request.lora_int_id)

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def sort_key(self) -> tuple[int, float]:
        """Scheduling order under the priority policy: lower value first, then arrival."""
        return (self.priority, self.arrival_time)
