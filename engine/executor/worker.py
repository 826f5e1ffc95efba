"""A worker process: one rank's share of the model (its tensor-parallel shard of its pipeline
stage), stepping as the engine core tells it over ZeroMQ.

It keeps a mirror of each sequence the core has scheduled (prompt, outputs, block table), so a
step carries only what changed. With async scheduling it launches step N+1 before it sends the
samples of step N, keeping the device busy while the core takes them in.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import msgspec
import zmq

from pagoda.engine.config import EngineConfig
from pagoda.engine.core.kv_cache_manager import BlockOp, BlockOpKind
from pagoda.engine.core.sequence import Sequence
from pagoda.engine.executor.messages import (
    Failed,
    InitCache,
    Ready,
    Shutdown,
    Step,
    StepResult,
    ToWorker,
)
from pagoda.engine.outputs import TokenLogprobs

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 0.5


@dataclass
class WorkerAddresses:
    core: str  # the core's ROUTER: steps in, results out
    heartbeat: str  # the core's PULL: this worker's heartbeats


def die_with_parent() -> None:
    """The kernel kills this process when the one that started it dies: no orphans, whatever
    way the engine core goes."""
    if sys.platform == "linux":
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def heartbeat(context: zmq.Context, address: str, rank: int, parent: int | None) -> None:
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    payload = rank.to_bytes(4, "little")
    while True:
        if parent is not None and os.getppid() != parent:
            os._exit(1)  # the engine core is gone (a parent-death signal missed: belt and braces)
        sock.send(payload, zmq.NOBLOCK) if sock.poll(0, zmq.POLLOUT) else None
        time.sleep(HEARTBEAT_INTERVAL_S)


class Worker:
    def __init__(self, config: EngineConfig, rank: int, local_rank: int) -> None:
        import torch

        from pagoda.engine.distributed import init_distributed
        from pagoda.engine.runner.model_runner import ModelRunner, pick_device

        self.rank = rank
        device = pick_device(config.device)
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.world_size))
        init_distributed(rank, config.tensor_parallel_size, config.pipeline_parallel_size, backend)
        self.runner = ModelRunner(config, allocate=False)
        self.mirrors: dict[int, Sequence] = {}

    def apply(self, step: Step) -> list[tuple[Sequence, int]]:
        """Bring the mirrors up to the core's state; the step's batch over them."""
        for number in step.finished:
            self.mirrors.pop(number, None)
        batch = []
        for s in step.seqs:
            seq = self.mirrors.get(s.seq)
            if seq is None:
                new = s.new
                assert new is not None  # the core sends it with a sequence's first step
                seq = Sequence(str(s.seq), "", new.index, new.prompt_token_ids, new.params)
                seq.pooling, seq.lora_request = new.pooling, new.lora_request
                self.mirrors[s.seq] = seq
            del seq.output_token_ids[s.output_start :]
            seq.output_token_ids += s.output_tokens
            seq.num_computed_tokens = s.num_computed_tokens
            seq.block_table = s.block_table
            seq.forks = []
            for number, index in s.forks:
                child = Sequence(
                    str(number),
                    "",
                    index,
                    seq.prompt_token_ids,
                    seq.params,
                    lora_request=seq.lora_request,
                )
                self.mirrors[number] = child
                seq.forks.append(child)
            batch.append((seq, s.num_new_tokens))
        return batch

    def execute(self, step: Step):
        batch = self.apply(step)
        ops = [BlockOp(cast(BlockOpKind, kind), src, dst) for kind, src, dst in step.block_ops]
        sampling, sampled = self.runner.execute(batch, ops)
        for seq, _ in batch:
            seq.forks = []
        return sampling, sampled


def ready_message(worker: Worker, num_blocks: int) -> Ready:
    runner = worker.runner
    return Ready(
        worker.rank,
        num_blocks,
        getattr(runner, "num_cpu_blocks", 0),  # known once the cache is allocated
        runner.model_config,
        str(runner.device),
        str(runner.dtype).removeprefix("torch."),
    )


def result_message(sampling: list[Sequence], sampled) -> StepResult:
    out = sampled.result()
    # The runner set each beam sequence's logprobs in this step.
    beams = [cast("torch.Tensor", s.beam_logprobs) for s in sampling if s.params.use_beam_search]
    return StepResult(
        out.token_ids,
        out.logprobs,
        out.top_logprobs,
        [b.float().cpu().numpy().tobytes() for b in beams],
        [cast("torch.Tensor", s.pooled).cpu().numpy().tobytes() for s in sampling if s.pooling],
        prompt_logprobs_rows(sampling),
    )


def prompt_logprobs_rows(sampling: list[Sequence]) -> list[tuple[int, list[TokenLogprobs | None]]]:
    """Rows whose prompt logprobs are new, each sent once (the core keeps them)."""
    rows = []
    for i, seq in enumerate(sampling):
        if seq.prompt_logprobs is not None:
            rows.append((i, seq.prompt_logprobs))
            seq.prompt_logprobs = None
    return rows


def worker_main(
    config: EngineConfig,
    rank: int,
    local_rank: int,
    addresses: WorkerAddresses,
    env: dict[str, str],
    watch_parent: bool,
) -> None:
    """The process's entry point: load, report, then step until told to stop."""
    if watch_parent:
        die_with_parent()
    os.environ.update(env)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{rank} %(name)s %(message)s")
    context = zmq.Context()
    threading.Thread(
        target=heartbeat,
        args=(context, addresses.heartbeat, rank, os.getppid() if watch_parent else None),
        daemon=True,
    ).start()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, rank.to_bytes(4, "little"))
    sock.setsockopt(zmq.LINGER, 1000)
    sock.connect(addresses.core)
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(ToWorker)
    try:
        worker = Worker(config, rank, local_rank)
        runner = worker.runner
        sock.send(encoder.encode(ready_message(worker, runner.determine_num_blocks())))
        serve(worker, sock, encoder, decoder)
    except BaseException as e:  # the core must hear why, then the process ends
        log.exception("worker %d failed", rank)
        sock.send(encoder.encode(Failed(rank, str(e), isinstance(e, ValueError))))
        sock.close(linger=1000)
        os._exit(1)
    sock.close(linger=1000)


def serve(worker: Worker, sock: zmq.Socket, encoder, decoder) -> None:
    from pagoda.engine.distributed import get_pp_group, get_tensor_model_parallel_rank

    replies = get_pp_group().is_last_rank and get_tensor_model_parallel_rank() == 0
    pending = None  # a launched step whose samples are not sent yet
    while True:
        # Until the next step arrives, send the samples as soon as they are ready; a step that
        # arrives first is launched first, so the device never waits for this host.
        while pending is not None and not sock.poll(1):
            ready = pending[1].ready
            if ready is None or ready.query():
                sock.send(encoder.encode(result_message(*pending)))
                pending = None
        message = decoder.decode(sock.recv())
        if isinstance(message, Shutdown):
            return
        if isinstance(message, InitCache):
            worker.runner.initialize_kv_cache(message.num_blocks)
            sock.send(encoder.encode(ready_message(worker, worker.runner.num_blocks)))
            continue
        sampling, sampled = worker.execute(message)
        if pending is not None:
            sock.send(encoder.encode(result_message(*pending)))
            pending = None
        if replies and sampled is not None:
            pending = (sampling, sampled)
