"""The engine in one process: the input processor, the engine core and the output processor,
stepped by the caller (`LLM`, the benchmarks). `pagoda serve` runs the same three with the core in
its own process (AsyncLLM)."""

from __future__ import annotations

from typing import Any

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import KVCacheManager
from pagoda.engine.core.scheduler import Scheduler
from pagoda.engine.engine_core import EngineCore, Request, Runner
from pagoda.engine.input_processor import InputProcessor
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.metrics import EngineMetrics
from pagoda.engine.output_processor import OutputProcessor
from pagoda.engine.outputs import PoolingRequestOutput, RequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.request_rules import RequestLimits
from pagoda.engine.sampling_params import SamplingParams
from pagoda.engine.spec_decode.decoder import SpecDecoder
from pagoda.engine.structured.backend import StructuredOutputs


class LLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        runner: Runner | None = None,
        tokenizer=None,
        max_position_embeddings: int | None = None,
        eos_token_ids: list[int] | None = None,
        log_stats: bool = True,
    ) -> None:
        self.core = EngineCore(config, runner, tokenizer, max_position_embeddings, eos_token_ids)
        self.config = config
        self.tokenizer = self.core.tokenizer
        info = self.core.info()
        # A test's fake runner has no model files (no generation_config.json).
        self.processor = InputProcessor(config, self.tokenizer, info, model_files=runner is None)
        self.metrics = EngineMetrics(config.name, info.max_model_len) if log_stats else None
        self.output_processor = OutputProcessor(self.tokenizer, self.metrics)

    # The core's parts, for the benchmarks and tests that look at them.
    @property
    def runner(self) -> Runner:
        return self.core.runner

    @property
    def kv(self) -> KVCacheManager:
        return self.core.kv

    @property
    def scheduler(self) -> Scheduler:
        return self.core.scheduler

    @property
    def requests(self) -> dict[str, Request]:
        return self.core.requests

    @property
    def eos_token_ids(self) -> set[int]:
        return self.core.eos_token_ids

    @property
    def spec(self) -> SpecDecoder | None:
        """Speculative decoding's drafts and counts (LLM.get_metrics), None without it."""
        return self.core.spec

    @property
    def structured(self) -> StructuredOutputs:
        """The grammars requests are checked against (compiled and cached on the API side)."""
        return self.processor.structured

    @property
    def max_model_len(self) -> int:
        return self.core.max_model_len

    @property
    def limits(self) -> RequestLimits:
        return self.processor.limits

    @property
    def default_sampling_params(self) -> dict[str, Any]:
        """--generation-config's defaults for the fields a request leaves unset."""
        return self.processor.default_sampling_params

    def tokenize(self, prompt: str | list[int]) -> list[int]:
        return self.processor.tokenize(prompt)

    def add_request(
        self,
        request_id: str,
        prompt: str | list[int],
        params: SamplingParams | PoolingParams,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> None:
        """Queue a request. ValueError (an HTTP 400) when it cannot be served as asked."""
        if request_id in self.output_processor.requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        req = self.processor.make_request(
            request_id, prompt, params, priority, cache_salt, lora_request
        )
        self.output_processor.add_request(req, prompt if isinstance(prompt, str) else None)
        self.core.add_request(req)

    def abort_request(self, request_id: str) -> RequestOutput | PoolingRequestOutput | None:
        self.core.abort_requests([request_id])
        return self.output_processor.abort(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.core.has_unfinished_requests()

    def step(self) -> list[RequestOutput | PoolingRequestOutput]:
        batch = self.core.step()
        self.output_processor.record_stats(batch.stats)
        processed = self.output_processor.process(batch.outputs, batch.timestamp)
        if processed.stopped:
            self.core.stop_sequences(processed.stopped)
        return processed.request_outputs

    def check_health(self) -> None:
        self.core.check_health()

    def shutdown(self) -> None:
        self.core.shutdown()
