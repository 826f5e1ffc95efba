"""What the HTTP server needs of an engine: AsyncLLM, or the unit tests' fake. Nothing else of the
engine is reached from engine/server."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from pagoda.engine.config import EngineConfig
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.outputs import PoolingRequestOutput, RequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.request_rules import RequestLimits
from pagoda.engine.sampling_params import SamplingParams


class EngineClient(Protocol):
    config: EngineConfig
    tokenizer: Any  # a Hugging Face tokenizer: encode, decode, apply_chat_template
    limits: RequestLimits  # what check_request holds requests to, before the engine sees them
    # --generation-config's defaults (temperature, top_p, top_k, min_p, repetition_penalty,
    # max_tokens) for fields a request leaves unset.
    default_sampling_params: dict[str, Any]

    async def start(self) -> None: ...

    async def shutdown(self) -> None: ...

    def is_healthy(self) -> bool:
        """The loop is alive and stepping."""
        ...

    def num_waiting(self) -> int:
        """Requests accepted that do not run yet (queued, preempted or swapped)."""
        ...

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        request_id: str,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Outputs until a finished one; leaving early aborts the request. Raises ParamError
        before the first output for a request the engine cannot serve, RequestFailedError when
        this request alone failed, EngineDeadError when the loop died."""
        ...

    def check_lora(self, request: LoRARequest) -> None:
        """ValueError when the adapter cannot run on this engine (reads its folder: off the loop)."""
        ...

    def encode(
        self,
        prompt: list[int],
        pooling_params: PoolingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncGenerator[PoolingRequestOutput, None]:
        """An embedding request (--runner pooling): one finished output with the vector."""
        ...
