"""The engine for an asyncio server: requests are tokenized and checked here, run by the engine
core (its own process for `pagoda serve`), and their outputs come back through one output-handler
task that detokenizes them and feeds each request's queue.

Only the API's work (HTTP, tokenization, detokenization, stop strings, SSE) shares this process's
GIL; the core steps in its own process, as in vLLM's v1 engine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_client import CoreClient, CoreProcess, CoreThread, EngineDeadError
from pagoda.engine.core_messages import Abort, EngineCoreOutputs, StopSequences, ToCore
from pagoda.engine.input_processor import InputProcessor
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.metrics import EngineMetrics
from pagoda.engine.output_processor import OutputProcessor
from pagoda.engine.outputs import PoolingRequestOutput, RequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

if TYPE_CHECKING:
    from pagoda.engine.llm_engine import LLMEngine

log = logging.getLogger(__name__)

# The output handler processes a step's outputs this many requests at a time, letting the event
# loop serve HTTP in between: a 256-request step does not hold the loop for its whole batch.
CHUNK = 64

__all__ = ["AsyncLLM", "EngineDeadError", "RequestFailedError"]


Output = RequestOutput | PoolingRequestOutput


class RequestFailedError(RuntimeError):
    """This request alone failed in the engine (finish_reason "error"); the others go on."""


class AsyncLLM:
    # The core emits at least once a second; silent this long, it is wedged: /health fails, the
    # requests in flight end with an error, and the server exits non-zero.
    health_timeout_s: float = 60.0
    # A fault hook, 0 but in tests (PAGODA_TEST_TTFT_DELAY_S, server/fault_hooks.py): each request
    # waits this long after its arrival before it goes to the core, so that its TTFT, as the
    # metrics and the operator's rollout gate see it, is that much slower.
    first_token_delay_s: float = 0.0

    def __init__(
        self,
        config: EngineConfig,
        client: CoreClient,
        processor: InputProcessor,
        log_stats: bool = True,
    ) -> None:
        self.config, self.client, self.processor = config, client, processor
        self.tokenizer = processor.tokenizer
        self.limits = processor.limits
        self.structured = processor.structured  # the server checks grammars before a 200
        # --generation-config's defaults for the fields a request leaves unset.
        self.default_sampling_params: dict[str, Any] = processor.default_sampling_params
        self.max_model_len: int = client.info.max_model_len
        metrics = EngineMetrics(config.name, self.max_model_len) if log_stats else None
        self.output_processor = OutputProcessor(self.tokenizer, metrics)
        self._queues: dict[str, asyncio.Queue[Output | BaseException]] = {}
        self._unstarted: set[str] = set()  # added, no output yet: num_waiting()
        self._outbox: list[ToCore] = []  # this tick's messages to the core
        self._handler: asyncio.Task | None = None
        self._last_output = time.monotonic()
        self.error: BaseException | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncLLM:
        """The engine core in its own process; the tokenizer here."""
        from pagoda.engine.tokenizer import load_tokenizer

        client = CoreProcess(config)
        try:
            tokenizer = load_tokenizer(config)  # while the core loads the model
        except BaseException:
            client.kill()
            raise
        client.wait_ready()
        try:
            processor = InputProcessor(config, tokenizer, client.info)
        except BaseException:
            client.kill()
            raise
        return cls(config, client, processor)

    @classmethod
    def in_thread(cls, engine: LLMEngine) -> AsyncLLM:
        """An engine built here (any runner, a test's fake) with its core's loop on a thread."""
        return cls(engine.config, CoreThread(engine.core), engine.processor)

    async def start(self) -> None:
        if self._handler is None:
            self._last_output = time.monotonic()
            self._handler = asyncio.get_running_loop().create_task(self._handle_outputs())

    def is_healthy(self) -> bool:
        return (
            self._handler is not None
            and self.error is None
            and time.monotonic() - self._last_output < self.health_timeout_s
        )

    def num_waiting(self) -> int:
        """Requests accepted that have produced no output yet (queued or prefilling)."""
        return len(self._unstarted)

    def check_lora(self, request: LoRARequest) -> None:
        """ParamError (a ValueError) when the adapter cannot run on this engine: its folder is
        read here, against the core's model (blocking: off the event loop)."""
        self.processor.loras.check(request)

    async def encode(
        self,
        prompt: str | list[int],
        pooling_params: PoolingParams,
        request_id: str,
        priority: int = 0,
    ) -> AsyncGenerator[PoolingRequestOutput, None]:
        """vLLM's AsyncLLM.encode: one finished output with the pooled vector (--runner pooling)."""
        outputs = self.generate(prompt, pooling_params, request_id, priority)
        try:
            async for out in outputs:
                assert isinstance(out, PoolingRequestOutput), "a pooling request's output"
                yield out
        finally:
            await outputs.aclose()

    async def generate(
        self,
        prompt: str | list[int],
        params: SamplingParams | PoolingParams,
        request_id: str,
        priority: int = 0,
        cache_salt: str | None = None,
        lora_request: LoRARequest | None = None,
    ) -> AsyncGenerator[Output, None]:
        """Yield a RequestOutput whenever the request gains tokens; the last one is finished.

        Leaving the iteration early (a client gone) aborts the request and frees its blocks.
        """
        await self.start()
        req = self.processor.make_request(  # its arrival time: TTFT counts from here
            request_id, prompt, params, priority, cache_salt, lora_request
        )
        if self.first_token_delay_s:
            await asyncio.sleep(self.first_token_delay_s)
        if self.error is not None:
            raise EngineDeadError(f"the engine died: {self.error}")
        if request_id in self._queues:
            raise ValueError(f"request id {request_id!r} is already in use")
        self.output_processor.add_request(req, prompt if isinstance(prompt, str) else None)
        q: asyncio.Queue[Output | BaseException] = asyncio.Queue()
        self._queues[request_id] = q
        self._unstarted.add(request_id)
        self._send(req)
        finished = False
        try:
            while not finished:
                out = q.get_nowait() if not q.empty() else await q.get()
                self._unstarted.discard(request_id)
                while not q.empty() and isinstance(out, RequestOutput):
                    out = coalesce(out, q.get_nowait())  # behind: one output, not several
                if isinstance(out, BaseException):
                    raise out
                finished = out.finished
                if finished and out.failed:
                    raise RequestFailedError(
                        f"request {request_id} failed in the engine (the server log has why)"
                    )
                yield out
        finally:
            self._unstarted.discard(request_id)
            self._queues.pop(request_id, None)
            if not finished:
                self._abort(request_id)

    async def abort(self, request_id: str) -> None:
        self._abort(request_id)

    def _abort(self, request_id: str) -> None:
        if self.output_processor.abort(request_id) is not None and self.error is None:
            self._send(Abort([request_id]))

    def _send(self, message: ToCore) -> None:
        """The messages of one event-loop tick go to the core together: requests that come
        together (a batch of prompts, of embedding inputs) reach the same step, as in one process."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self.error is None:
            self.client.send(messages)

    async def shutdown(self) -> None:
        if self._handler is not None:
            self._handler.cancel()
        await self.client.shutdown(graceful=self.error is None)

    # -- the output handler -----------------------------------------------------------------------

    async def _handle_outputs(self) -> None:
        try:
            while True:
                batch = await self.client.get_output(timeout_s=min(1.0, self.health_timeout_s))
                now = time.monotonic()
                if batch is None:
                    if now - self._last_output >= self.health_timeout_s:
                        raise EngineDeadError(
                            f"the engine core sent nothing for {now - self._last_output:.1f} s "
                            "(wedged?)"
                        )
                    continue
                self._last_output = now
                await self._process(batch)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # the core is gone: every request in flight must hear of it
            log.error("engine %s died: %s", self.config.name, e)
            self.error = e if isinstance(e, EngineDeadError) else EngineDeadError(repr(e))
            for q in self._queues.values():
                q.put_nowait(self.error)

    async def _process(self, batch: EngineCoreOutputs) -> None:
        self.output_processor.record_stats(batch.stats)
        outputs = batch.outputs
        for start in range(0, len(outputs), CHUNK):
            if start:
                await asyncio.sleep(0)  # let HTTP in between chunks
            chunk = outputs[start : start + CHUNK]
            processed = self.output_processor.process(chunk, batch.timestamp)
            if processed.stopped:
                self._send(StopSequences(processed.stopped))
            for out in processed.request_outputs:
                q = self._queues.get(out.request_id)
                if q is not None:
                    q.put_nowait(out)


def coalesce(earlier: RequestOutput, later: Output | BaseException) -> Output | BaseException:
    """Two outputs of a request queued before the consumer came: the later, with the deltas of
    both (its other fields are cumulative)."""
    if not isinstance(later, RequestOutput):
        return later
    later.deltas = [(t1 + t2, i1 + i2) for (t1, i1), (t2, i2) in zip(earlier.deltas, later.deltas)]
    return later
