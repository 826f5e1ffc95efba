"""The engine for an asyncio server: the loop runs on its own thread, each request gets a queue.

The model's forward pass is blocking PyTorch work, so it runs off the event loop; requests and
aborts reach the engine thread through an inbox, outputs come back with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator

from pagoda.engine.config import EngineConfig
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.lora.request import LoRARequest
from pagoda.engine.outputs import PoolingRequestOutput, RequestOutput
from pagoda.engine.pooling_params import PoolingParams
from pagoda.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)


class EngineDeadError(RuntimeError):
    pass


class RequestFailedError(RuntimeError):
    """This request alone failed in the engine (finish_reason "error"); the others go on."""


class AsyncLLM:
    # /health fails when the loop has not come round for this long (a wedged step).
    health_timeout_s: float = 60.0

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.config: EngineConfig = engine.config
        self.tokenizer = engine.tokenizer
        self.max_model_len: int = engine.max_model_len
        self.limits = engine.limits
        self.default_sampling_params = engine.default_sampling_params
        self._unstarted: set[str] = set()  # added, no output yet: num_waiting()
        self._queues: dict[str, asyncio.Queue] = {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop  # set by start(): the loop the server runs on
        self._heartbeat = time.monotonic()
        self._stopping = False
        self.error: BaseException | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> AsyncLLM:
        return cls(LLMEngine(config))

    async def start(self) -> None:
        if self._thread is None:
            self._loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._run, name=f"engine-{self.config.name}", daemon=True
            )
            self._thread.start()

    def is_healthy(self) -> bool:
        return (
            self._thread is not None
            and self._thread.is_alive()
            and self.error is None
            and time.monotonic() - self._heartbeat < self.health_timeout_s
        )

    def num_waiting(self) -> int:
        """Requests accepted that have produced no output yet (queued or prefilling)."""
        return len(self._unstarted)

    def num_free_blocks(self) -> int:
        return self.engine.kv.num_free_blocks

    def num_total_blocks(self) -> int:
        return self.engine.kv.num_blocks

    def check_lora(self, request: LoRARequest) -> None:
        """ValueError (a ParamError) when the adapter cannot run on this engine."""
        self.engine.loras.check(request)

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
    ) -> AsyncGenerator[RequestOutput | PoolingRequestOutput, None]:
        """Yield a RequestOutput whenever the request gains tokens; the last one is finished.

        Leaving the iteration early (a client gone) aborts the request and frees its blocks.
        """
        await self.start()
        if self.error is not None:
            raise EngineDeadError(f"the engine loop died: {self.error!r}")
        if request_id in self._queues:
            raise ValueError(f"request id {request_id!r} is already in use")
        req = self.engine.make_request(
            request_id, prompt, params, priority, cache_salt, lora_request
        )
        q: asyncio.Queue = asyncio.Queue()
        self._queues[request_id] = q
        self._unstarted.add(request_id)
        self._send(("add", req))
        finished = False
        try:
            while not finished:
                out = await q.get()
                self._unstarted.discard(request_id)
                if isinstance(out, RequestFailedError):
                    raise out
                if isinstance(out, BaseException):
                    raise EngineDeadError(f"the engine loop died: {out!r}") from out
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
                self._send(("abort", request_id))

    async def abort(self, request_id: str) -> None:
        self._send(("abort", request_id))

    async def shutdown(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        await asyncio.to_thread(self.engine.shutdown)

    # -- the engine thread ------------------------------------------------------------------------

    def _send(self, command: tuple) -> None:
        self._inbox.put(command)
        self._wake.set()

    def _deliver(
        self, out: RequestOutput | PoolingRequestOutput | BaseException, request_id: str
    ) -> None:
        q = self._queues.get(request_id)
        if q is not None:
            q.put_nowait(out)

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._heartbeat = time.monotonic()
                self.engine.check_health()  # a dead or hung worker ends the loop within seconds
                self._drain_inbox()
                if not self.engine.has_unfinished_requests():
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                for out in self.engine.step():
                    self._loop.call_soon_threadsafe(self._deliver, out, out.request_id)
        except BaseException as e:  # any failure kills the loop; requests must hear of it
            log.exception("engine loop died")
            self.error = e
            for rid in list(self._queues):
                self._loop.call_soon_threadsafe(self._deliver, e, rid)

    def _drain_inbox(self) -> None:
        while True:
            try:
                kind, arg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if kind == "add":
                try:
                    self.engine.add(arg)
                except Exception as e:
                    failed = RequestFailedError(f"request {arg.request_id} not added: {e}")
                    self._loop.call_soon_threadsafe(self._deliver, failed, arg.request_id)
            else:
                out = self.engine.abort_request(arg)
                if out is not None:
                    self._loop.call_soon_threadsafe(self._deliver, out, arg)
