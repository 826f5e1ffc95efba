"""The engine core's side of the worker processes: one per rank, started, fed and watched here.

It stands where the in-process ModelRunner stands for the engine (num_blocks, execute(), the
sampler for request checks): `execute` broadcasts the step and returns at once; `result()` of
what it returns waits for the samples. A worker that dies, or whose heartbeats stop, fails the
executor within seconds: the waiting step raises, check_health raises, and every worker is
stopped, so none outlives the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import socket
import tempfile
import threading
import time
import uuid
from multiprocessing.context import SpawnProcess

import msgspec
import numpy as np
import torch
import zmq

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import BlockOp
from pagoda.engine.core.sequence import PENDING_TOKEN, Sequence
from pagoda.engine.executor.messages import (
    Failed,
    FromWorker,
    InitCache,
    NewSequence,
    Ready,
    SequenceStep,
    Shutdown,
    Step,
    StepResult,
)
from pagoda.engine.executor.worker import WorkerAddresses, worker_main
from pagoda.engine.runner.model_runner import sampled_sequences
from pagoda.engine.sample.sampler import Sampler, SamplerOutput

log = logging.getLogger(__name__)

HEARTBEAT_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 600.0


class WorkerFailure(RuntimeError):
    """A worker died, hung or failed: the engine cannot step again, its process should end."""

    fatal = True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def core_addresses(config: EngineConfig) -> tuple[WorkerAddresses, WorkerAddresses]:
    """(what the core binds, what the workers connect to): IPC on one node, TCP beside the
    torch.distributed port (master_port + 1, + 2) when the engine spans nodes."""
    if config.nnodes > 1:
        core, hb = config.master_port + 1, config.master_port + 2
        bind = WorkerAddresses(f"tcp://*:{core}", f"tcp://*:{hb}")
        return bind, WorkerAddresses(
            f"tcp://{config.master_addr}:{core}", f"tcp://{config.master_addr}:{hb}"
        )
    base = os.path.join(tempfile.gettempdir(), f"pagoda-{uuid.uuid4().hex[:12]}")
    local = WorkerAddresses(f"ipc://{base}-core", f"ipc://{base}-hb")
    return local, local


def start_workers(
    config: EngineConfig, addresses: WorkerAddresses, master_port: int
) -> list[SpawnProcess]:
    """This node's ranks: [node_rank * per_node, (node_rank + 1) * per_node)."""
    per_node = config.world_size // config.nnodes
    env = {"MASTER_ADDR": config.master_addr, "MASTER_PORT": str(master_port)}
    ctx = mp.get_context("spawn")
    procs = []
    for local_rank in range(per_node):
        rank = config.node_rank * per_node + local_rank
        proc = ctx.Process(
            target=worker_main,
            args=(config, rank, local_rank, addresses, env, True),
            name=f"pagoda-worker-{rank}",
            daemon=True,
        )
        proc.start()
        procs.append(proc)
    return procs


class RemoteSamples:
    """A launched step's samples, on their way from the output rank."""

    def __init__(
        self,
        executor: MultiprocExecutor,
        number: int,
        beams: list[Sequence],
        pooling: list[Sequence],
        sampling: list[Sequence],
    ) -> None:
        self.executor, self.number, self.beams, self.pooling = executor, number, beams, pooling
        self.sampling = sampling

    def result(self) -> SamplerOutput:
        out = self.executor.wait_result(self.number)
        for seq, raw in zip(self.beams, out.beam_logprobs):
            seq.beam_logprobs = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())
        for seq, raw in zip(self.pooling, out.pooled):
            seq.pooled = torch.from_numpy(np.frombuffer(raw, dtype=np.float32).copy())
        for row, logprobs in out.prompt_logprobs:
            self.sampling[row].prompt_logprobs = logprobs
        return SamplerOutput(out.token_ids, out.logprobs, out.top_logprobs)


class MultiprocExecutor:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.world_size = config.world_size
        per_node = config.world_size // config.nnodes
        on_gpus = config.device != "cpu" and torch.cuda.is_available()
        if on_gpus and per_node > torch.cuda.device_count():
            raise ValueError(
                f"{per_node} ranks on this node need as many GPUs; it has "
                f"{torch.cuda.device_count()}"
            )
        self._context = zmq.Context()
        bind, connect = core_addresses(config)
        self._sock = self._context.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._bind(self._sock, bind.core)
        self._heartbeats = self._context.socket(zmq.PULL)
        self._heartbeats.setsockopt(zmq.LINGER, 0)
        self._bind(self._heartbeats, bind.heartbeat)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(FromWorker)
        self._identities = [r.to_bytes(4, "little") for r in range(self.world_size)]
        # Watched from each worker's first heartbeat on (before it, the process is starting).
        self._last_beat: dict[int, float] = {}
        self.failure: str | None = None
        self._stopped = threading.Event()
        master_port = config.master_port if config.nnodes > 1 else free_port()
        self.procs = start_workers(config, connect, master_port)
        self._monitor = threading.Thread(target=self._watch, name="worker-monitor", daemon=True)
        self._monitor.start()
        try:
            ready = self._gather_ready(STARTUP_TIMEOUT_S)
            self.num_blocks = min(r.num_blocks for r in ready)
            self._send_all(InitCache(self.num_blocks))
            ready = self._gather_ready(STARTUP_TIMEOUT_S)
        except BaseException:
            self.shutdown()
            raise
        self.num_cpu_blocks = min(r.num_cpu_blocks for r in ready)
        self.model_config = ready[0].model_config
        # Where and how rank 0 runs the model (reports; the core holds no tensors of it).
        self.device = torch.device(ready[0].device)
        self.dtype = getattr(torch, ready[0].dtype)
        self.sampler = Sampler(self.model_config.vocab_size, self.model_config.eos_token_ids)
        # Per sequence the workers mirror: its number, and how many of its output tokens they
        # have final.
        self._synced: dict[Sequence, tuple[int, int]] = {}
        self._numbers = itertools.count()
        self._results: dict[int, StepResult] = {}
        self._launched = self._received = 0

    @staticmethod
    def _bind(sock: zmq.Socket, address: str) -> None:
        try:
            sock.bind(address)
        except zmq.ZMQError as e:
            raise ValueError(f"cannot listen on {address} for the workers: {e}") from e

    # -- the steps --------------------------------------------------------------------------------

    def execute(
        self, batch: list[tuple[Sequence, int]], block_ops: list[BlockOp] | tuple[()] = ()
    ) -> tuple[list[Sequence], RemoteSamples | None]:
        self.check_health()
        finished = [seq for seq in self._synced if seq.is_finished]
        gone = [self._synced.pop(seq)[0] for seq in finished]
        steps = [self._sequence_step(seq, n) for seq, n in batch]
        self._send_all(Step(steps, [(op.kind, op.src, op.dst) for op in block_ops], gone))
        sampling = sampled_sequences(batch)
        if not sampling:
            return [], None
        self._launched += 1
        beams = [s for s in sampling if s.params.use_beam_search]
        pooling = [s for s in sampling if s.pooling is not None]
        return sampling, RemoteSamples(self, self._launched, beams, pooling, sampling)

    def _sequence_step(self, seq: Sequence, n: int) -> SequenceStep:
        new = None
        if seq not in self._synced:
            new = NewSequence(
                seq.prompt_token_ids, seq.params, seq.index, seq.pooling, seq.lora_request
            )
            self._synced[seq] = (next(self._numbers), 0)
        number, start = self._synced[seq]
        outputs = seq.output_token_ids
        final = len(outputs)
        while final > start and outputs[final - 1] == PENDING_TOKEN:
            final -= 1
        self._synced[seq] = (number, final)
        forks = []
        for child in seq.forks:
            self._synced[child] = (next(self._numbers), 0)
            forks.append((self._synced[child][0], child.index))
        return SequenceStep(
            number, seq.num_computed_tokens, n, seq.block_table, start, outputs[start:], new, forks
        )

    def wait_result(self, number: int) -> StepResult:
        while number not in self._results:
            message = self._receive()
            if not isinstance(message, StepResult):
                raise WorkerFailure(f"unexpected message from a worker: {message!r}")
            self._received += 1
            self._results[self._received] = message
        return self._results.pop(number)

    # -- messages ---------------------------------------------------------------------------------

    def _send_all(self, message) -> None:
        frame = self._encoder.encode(message)
        for identity in self._identities:
            try:
                self._sock.send_multipart([identity, frame], copy=False)
            except zmq.ZMQError as e:
                self._fail(f"worker rank {int.from_bytes(identity, 'little')} is unreachable: {e}")
                raise WorkerFailure(self.failure) from e

    def _receive(self, timeout_s: float | None = None):
        """The next message from a worker; raises as soon as a worker has failed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._sock.poll(100):
            # A worker that fails sends why before it exits, and the watcher may see the exit
            # first: a moment for that last message keeps a misconfiguration its one-line error.
            if self.failure is not None and not self._sock.poll(1000):
                raise WorkerFailure(self.failure)
            if self.failure is not None:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerFailure(f"the workers did not answer within {timeout_s:.0f} s")
        _, frame = self._sock.recv_multipart()
        message = self._decoder.decode(frame)
        if isinstance(message, Failed):
            self._fail(f"worker rank {message.rank} failed: {message.error}")
            if message.misconfigured:  # a one-line error at start, as for a bad flag
                raise ValueError(message.error)
            raise WorkerFailure(self.failure)
        return message

    def _gather_ready(self, timeout_s: float) -> list[Ready]:
        ready: dict[int, Ready] = {}
        while len(ready) < self.world_size:
            message = self._receive(timeout_s)
            if isinstance(message, Ready):
                ready[message.rank] = message
        return [ready[r] for r in range(self.world_size)]

    # -- health -----------------------------------------------------------------------------------

    def check_health(self) -> None:
        if self.failure is not None:
            raise WorkerFailure(self.failure)

    def _watch(self) -> None:
        """Every 0.2 s: drain the heartbeats, then fail on a dead local worker or a silent one."""
        while not self._stopped.wait(0.2):
            while self._heartbeats.poll(0):
                rank = int.from_bytes(self._heartbeats.recv(), "little")
                self._last_beat[rank] = time.monotonic()
            for proc in self.procs:
                if proc.exitcode is not None:
                    self._fail(
                        f"worker {proc.name} (pid {proc.pid}) died, exit code {proc.exitcode}"
                    )
                    return
            now = time.monotonic()
            for rank, beat in self._last_beat.items():
                if now - beat > HEARTBEAT_TIMEOUT_S:
                    self._fail(
                        f"worker rank {rank} sent no heartbeat for {now - beat:.1f} s (hung?)"
                    )
                    return

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            log.error("%s; stopping every worker", reason)
        self._kill_workers()

    def _kill_workers(self) -> None:
        for proc in self.procs:
            if proc.exitcode is None:
                proc.kill()
        for proc in self.procs:
            proc.join(5)

    def shutdown(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()  # the monitor stops first: workers exiting now are no failure
        self._monitor.join()
        if self.failure is None:
            with contextlib.suppress(WorkerFailure):  # a worker already gone needs no goodbye
                self._send_all(Shutdown())
            for proc in self.procs:
                proc.join(10)
        self._kill_workers()
        self._sock.close(0)
        self._heartbeats.close(0)
        self._context.term()


def run_headless(config: EngineConfig) -> int:
    """Node node_rank > 0 of a multi-node engine: only this node's workers, which join the ranks
    of node 0 through MASTER_ADDR:MASTER_PORT and take their steps from its engine core."""
    _, connect = core_addresses(config)
    procs = start_workers(config, connect, config.master_port)
    log.info("node %d: workers %s started", config.node_rank, [p.pid for p in procs])
    for proc in procs:
        proc.join()
    return 0 if all(p.exitcode == 0 for p in procs) else 1
