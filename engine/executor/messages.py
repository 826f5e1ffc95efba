"""The messages between the engine core and its workers, as msgspec structs over ZeroMQ.

A worker keeps a mirror of each sequence it has seen; a step carries, per scheduled sequence, only
what changed: its place in the KV cache and the output tokens since the last step (a token the
core does not have yet is PENDING_TOKEN, filled in on the device from the last step's samples)."""

from __future__ import annotations

import msgspec

from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.models.config import ModelConfig
from pagoda.engine.outputs import TokenLogprobs
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams


class NewSequence(msgspec.Struct, array_like=True):
    prompt_token_ids: list[int]
    params: SamplingParams
    index: int
    pooling: PoolingParams | None = None
    lora_request: LoRARequest | None = None


class SequenceStep(msgspec.Struct, array_like=True):
    # The executor's number for the sequence object (seq_ids can repeat: beams fork by position).
    seq: int
    num_computed_tokens: int
    num_new_tokens: int
    block_table: list[int]
    # Output tokens from output_start on (the mirror's list is cut there and extended).
    output_start: int
    output_tokens: list[int]
    new: NewSequence | None = None  # the first time a worker sees the sequence
    forks: list[tuple[int, int]] = []  # (number, index) of children that fork at this sample


class Step(msgspec.Struct, tag=True, array_like=True):
    seqs: list[SequenceStep]
    block_ops: list[tuple[str, int, int]]  # (kind, src, dst)
    finished: list[int]  # sequences the mirrors may forget


class InitCache(msgspec.Struct, tag=True, array_like=True):
    num_blocks: int


class Shutdown(msgspec.Struct, tag=True, array_like=True):
    pass


class Ready(msgspec.Struct, tag=True, array_like=True):
    """A worker has loaded its shard: how many KV blocks it can hold, and the model."""

    rank: int
    num_blocks: int
    num_cpu_blocks: int
    model_config: ModelConfig
    device: str  # as the runner picked them (torch.device, torch.dtype as strings)
    dtype: str


class StepResult(msgspec.Struct, tag=True, array_like=True):
    token_ids: list[int]
    logprobs: list[float] | None
    top_logprobs: list[TokenLogprobs | None]
    # Beam rows' log-probabilities over the vocabulary (float32 bytes), in row order.
    beam_logprobs: list[bytes] = []
    # Pooling rows' vectors (float32 bytes), in row order.
    pooled: list[bytes] = []
    # (row, the prompt logprobs) of rows whose prompt was completed in this step.
    prompt_logprobs: list[tuple[int, list[TokenLogprobs | None]]] = []


class Failed(msgspec.Struct, tag=True, array_like=True):
    rank: int
    error: str
    misconfigured: bool  # a ValueError: the engine's options do not fit the model or the host


ToWorker = Step | InitCache | Shutdown
FromWorker = Ready | StepResult | Failed
