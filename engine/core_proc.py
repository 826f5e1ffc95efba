"""The engine core's busy loop, and the engine-core process that runs it for `pagoda serve`.

The loop takes the messages waiting (add, abort, stop), steps while there is work, and emits each
step's outputs with the scheduler's stats; idle, it emits the stats once a second, which is also
the API process's sign of life. In its own process the messages come and go as msgspec frames
over two ZeroMQ sockets (PULL in, PUSH out), so the API process's GIL never slows a step.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import zmq

from pagoda.engine.config import EngineConfig
from pagoda.engine.core_messages import (
    Abort,
    CoreFailed,
    EngineCoreOutput,
    EngineCoreOutputs,
    EngineCoreRequest,
    Shutdown,
    StopSequences,
    ToCore,
)
from pagoda.engine.engine_core import EngineCore
from pagoda.engine.loader.errors import ModelLoadError

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 1.0


@dataclass
class CoreAddresses:
    inputs: str  # the API process's PUSH, the core's PULL
    outputs: str  # the core's PUSH, the API process's PULL


def run_loop(
    core: EngineCore,
    receive: Callable[[float], list[ToCore]],
    emit: Callable[[EngineCoreOutputs], None],
) -> None:
    """Until a Shutdown message: `receive(timeout_s)` waits at most that long for messages."""
    last_emit = time.monotonic()
    while True:
        core.check_health()  # a dead or hung worker ends the loop within seconds
        busy = core.has_unfinished_requests()
        messages = receive(0.0 if busy else HEARTBEAT_INTERVAL_S)
        failed: list[EngineCoreOutput] = []
        for message in messages:
            if isinstance(message, Shutdown):
                return
            handle(core, message, failed)
        if core.has_unfinished_requests():
            batch = core.step()
            batch.outputs += failed
            emit(batch)
        elif messages or time.monotonic() - last_emit >= HEARTBEAT_INTERVAL_S:
            emit(EngineCoreOutputs(failed, core.take_stats(), time.monotonic()))
        else:
            continue
        last_emit = time.monotonic()


def handle(core: EngineCore, message: ToCore, failed: list[EngineCoreOutput]) -> None:
    if isinstance(message, EngineCoreRequest):
        try:
            core.add_request(message)
        except Exception:  # this request alone: the API side hears finish_reason "error"
            log.exception("request %s could not be added", message.request_id)
            failed.append(EngineCoreOutput(message.request_id, 0, [], finish_reason="error"))
    elif isinstance(message, Abort):
        core.abort_requests(message.request_ids)
    elif isinstance(message, StopSequences):
        core.stop_sequences(message.sequences)


def run_engine_core(config: EngineConfig, addresses: CoreAddresses) -> None:
    """The engine-core process's entry point: build the core, say so, loop until told to stop."""
    from pagoda.engine.executor.worker import die_with_parent

    die_with_parent()  # no orphan, however the API process ends
    # Ctrl-C, or a SIGTERM sent to the whole process group, must not end the core in the middle of
    # a drain: the API process decides when it stops (a Shutdown message, or SIGKILL).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s engine-core %(name)s %(message)s")
    context = zmq.Context()
    inputs, outputs = context.socket(zmq.PULL), context.socket(zmq.PUSH)
    for sock in (inputs, outputs):
        sock.setsockopt(zmq.LINGER, 1000)
    inputs.connect(addresses.inputs)
    outputs.connect(addresses.outputs)
    encoder = msgspec.msgpack.Encoder()
    decoder = msgspec.msgpack.Decoder(ToCore)
    try:
        core = EngineCore(config)
    except BaseException as e:  # the API process prints it as the start-up error
        if not isinstance(e, ValueError):  # a bad option or model source: its one line is enough
            log.exception("the engine core could not start")
        kind = (
            "ModelLoadError"
            if isinstance(e, ModelLoadError)
            else "ValueError"
            if isinstance(e, ValueError)
            else ""
        )
        outputs.send(encoder.encode(CoreFailed(str(e), kind)))
        context.destroy(linger=1000)  # the message out before the process ends
        os._exit(1)
    outputs.send(encoder.encode(core.info()))

    def receive(timeout_s: float) -> list[ToCore]:
        messages: list[ToCore] = []
        if inputs.poll(int(timeout_s * 1000)):
            while True:
                try:
                    frames = inputs.recv_multipart(zmq.NOBLOCK, copy=False)
                    messages += [decoder.decode(f.buffer) for f in frames]
                except zmq.Again:
                    return messages
        return messages

    def emit(batch: EngineCoreOutputs) -> None:
        outputs.send(encoder.encode(batch), copy=False)

    try:
        run_loop(core, receive, emit)
    except BaseException as e:  # the API process must hear why, then this process ends
        log.exception("engine core died")
        outputs.send(encoder.encode(CoreFailed(f"{type(e).__name__}: {e}")))
        core.shutdown()
        context.destroy(linger=1000)  # the message out before the process ends
        os._exit(1)
    core.shutdown()
    outputs.close()
    inputs.close()
