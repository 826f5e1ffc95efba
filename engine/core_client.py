"""The API process's side of the engine core: send it requests, aborts and stops; await its
outputs. `CoreProcess` starts and watches the engine-core process (`pagoda serve`); `CoreThread`
runs the same loop on a thread of this process, for tests whose runner is a fake."""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing as mp
import os
import queue
import tempfile
import threading
import time
import uuid
from typing import Protocol

import msgspec
import zmq
import zmq.asyncio

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_messages import (
    CoreFailed,
    CoreInfo,
    EngineCoreOutputs,
    FromCore,
    Shutdown,
    ToCore,
)
from pagoda.engine.loader.errors import ModelLoadError

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 1800.0  # a large model's download and load
SHUTDOWN_TIMEOUT_S = 30.0


class EngineDeadError(RuntimeError):
    """The engine core died or stopped answering: nothing more can be served; the server exits
    non-zero, to be restarted."""

    fatal = True


class CoreClient(Protocol):
    info: CoreInfo

    def send(self, messages: list[ToCore]) -> None:
        """Messages the core takes in together, before its next step."""
        ...

    async def get_output(self, timeout_s: float) -> EngineCoreOutputs | None:
        """The next batch of outputs, None after timeout_s; EngineDeadError once the core died."""
        ...

    async def shutdown(self, graceful: bool) -> None: ...


class CoreProcess:
    """The engine-core process, started at once; wait_ready() before use."""

    def __init__(self, config: EngineConfig) -> None:
        from pagoda.engine.core_proc import CoreAddresses, run_engine_core

        base = os.path.join(tempfile.gettempdir(), f"pagoda-core-{uuid.uuid4().hex[:12]}")
        addresses = CoreAddresses(f"ipc://{base}-in", f"ipc://{base}-out")
        self._context = zmq.Context()
        self._inputs = self._context.socket(zmq.PUSH)
        self._outputs = self._context.socket(zmq.PULL)
        for sock in (self._inputs, self._outputs):
            sock.setsockopt(zmq.LINGER, 0)
        self._inputs.bind(addresses.inputs)
        self._outputs.bind(addresses.outputs)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(FromCore)
        # Not daemonic: a daemonic process may not start the workers. It dies with this process
        # (a parent-death signal), and at exit it is killed before multiprocessing would join it.
        self.proc = mp.get_context("spawn").Process(
            target=run_engine_core,
            args=(config, addresses),
            name=f"pagoda-engine-core-{config.name}",
        )
        self.proc.start()
        atexit.register(self.kill)
        self._async_outputs: zmq.asyncio.Socket | None = None
        self.info: CoreInfo  # set by wait_ready()

    def wait_ready(self) -> None:
        """Wait for the core to load its model (this process may load its tokenizer meanwhile)."""
        try:
            self.info = self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> CoreInfo:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._outputs.poll(200):
            if self.proc.exitcode is not None and not self._outputs.poll(200):
                raise RuntimeError(f"the engine core process exited ({self.proc.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine core was not ready in {STARTUP_TIMEOUT_S:.0f} s")
        message = self._decoder.decode(self._outputs.recv())
        if isinstance(message, CoreFailed):
            self.proc.join(10)
            if message.error_type == "ModelLoadError":  # one line, as if raised here
                raise ModelLoadError(message.error)
            if message.error_type == "ValueError":
                raise ValueError(message.error)
            raise RuntimeError(f"the engine core could not start: {message.error}")
        if not isinstance(message, CoreInfo):
            raise RuntimeError(f"the engine core sent {message!r} before it was ready")
        return message

    def send(self, messages: list[ToCore]) -> None:
        # One multipart message: its parts arrive together.
        self._inputs.send_multipart([self._encoder.encode(m) for m in messages], copy=False)

    async def get_output(self, timeout_s: float) -> EngineCoreOutputs | None:
        if self._async_outputs is None:  # on the event loop that reads it
            self._async_outputs = zmq.asyncio.Socket.from_socket(self._outputs)
        if not await self._async_outputs.poll(int(timeout_s * 1000)):
            if self.proc.exitcode is not None:
                raise EngineDeadError(
                    f"the engine core process (pid {self.proc.pid}) died, exit code "
                    f"{self.proc.exitcode}"
                )
            return None
        frame = await self._async_outputs.recv(copy=False)
        message = self._decoder.decode(frame.buffer)
        if isinstance(message, CoreFailed):
            raise EngineDeadError(f"the engine core died: {message.error}")
        assert isinstance(message, EngineCoreOutputs), "CoreInfo comes once, first"
        return message

    async def shutdown(self, graceful: bool) -> None:
        if graceful and self.proc.exitcode is None:
            self.send([Shutdown()])
            await asyncio.to_thread(self.proc.join, SHUTDOWN_TIMEOUT_S)
        self.kill()

    def kill(self) -> None:
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(10)
        for sock in (self._inputs, self._outputs):
            sock.close(0)


class CoreThread:
    """The core's loop on a thread of this process (the core already built, over any runner)."""

    def __init__(self, core) -> None:
        from pagoda.engine.engine_core import EngineCore

        self.core: EngineCore = core
        self.info = core.info()
        self._inbox: queue.SimpleQueue[list[ToCore]] = queue.SimpleQueue()
        self._outbox: asyncio.Queue[EngineCoreOutputs | BaseException] | None = None
        self._thread: threading.Thread | None = None

    def send(self, messages: list[ToCore]) -> None:
        self._inbox.put(messages)

    async def get_output(self, timeout_s: float) -> EngineCoreOutputs | None:
        if self._outbox is None:
            self._start()
        assert self._outbox is not None
        try:
            out = await asyncio.wait_for(self._outbox.get(), timeout_s)
        except TimeoutError:
            return None
        if isinstance(out, BaseException):
            raise EngineDeadError(f"the engine loop died: {out!r}") from out
        return out

    def _start(self) -> None:
        from pagoda.engine.core_proc import run_loop

        loop = asyncio.get_running_loop()
        outbox: asyncio.Queue[EngineCoreOutputs | BaseException] = asyncio.Queue()
        self._outbox = outbox

        def emit(batch: EngineCoreOutputs) -> None:
            loop.call_soon_threadsafe(outbox.put_nowait, batch)

        def receive(timeout_s: float) -> list[ToCore]:
            messages: list[ToCore] = []
            try:
                if timeout_s:
                    messages += self._inbox.get(timeout=timeout_s)
            except queue.Empty:
                return []
            while not self._inbox.empty():
                messages += self._inbox.get_nowait()
            return messages

        def run() -> None:
            try:
                run_loop(self.core, receive, emit)
            except BaseException as e:  # the requests in flight must hear of it
                if not loop.is_closed():
                    log.exception("engine loop died")
                    loop.call_soon_threadsafe(outbox.put_nowait, e)

        self._thread = threading.Thread(target=run, name="engine-core", daemon=True)
        self._thread.start()

    async def shutdown(self, graceful: bool) -> None:
        self.send([Shutdown()])
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, SHUTDOWN_TIMEOUT_S)
        await asyncio.to_thread(self.core.shutdown)
