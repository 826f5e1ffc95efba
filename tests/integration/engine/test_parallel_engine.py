"""The engine over worker processes (gloo on the CPU): tensor-parallel, pipeline-parallel and both
give the greedy tokens of one rank, under continuous batching, preemption and prefix caching.

A tiny random Llama (tests/tiny_checkpoint.py) keeps each engine to seconds; requests arrive in
two waves, share a prefix, and overflow a small KV cache, so the runs preempt and hit the cache.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from engine_harness import PreemptionCounter, run_to_completion
from tiny_checkpoint import write_tiny_checkpoint

from pagoda.engine.config import EngineConfig
from pagoda.engine.executor.multiproc import HEARTBEAT_TIMEOUT_S, WorkerFailure
from pagoda.engine.llm import LLM
from pagoda.engine.llm_engine import LLMEngine
from pagoda.engine.sampling_params import SamplingParams

PREFIX = [7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]
PROMPTS = [PREFIX + [20 + i] * (i + 1) for i in range(6)]


def run_workload(folder: Path, **parallel) -> tuple[dict[str, list[list[int]]], int, int]:
    """(token ids per request and output, preemptions, prefix-cache hit tokens)."""
    config = EngineConfig(
        model=str(folder),
        dtype="float32",
        block_size=4,
        num_gpu_blocks_override=18,  # 72 tokens: four running requests of up to 38 cannot stay
        max_num_seqs=4,
        max_num_batched_tokens=24,
        max_model_len=64,
        **parallel,
    )
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    preemptions = PreemptionCounter(engine)
    hits = 0
    schedule = engine.scheduler.schedule

    def counting():
        nonlocal hits
        out = schedule()
        hits += out.prefix_cache_hits
        return out

    engine.scheduler.schedule = counting
    try:
        params = {
            "max_tokens": 20,
            "ignore_eos": True,
            "detokenize": False,
            "output_kind": "final_only",
        }
        for i, prompt in enumerate(PROMPTS[:3]):
            engine.add_request(str(i), prompt, SamplingParams(temperature=0.0, **params))
        outputs = [*engine.step(), *engine.step()]  # the second wave joins a running batch
        for i, prompt in enumerate(PROMPTS[3:], start=3):
            # n = 2 forks its second output from the first at the first token, in the workers too
            n = 2 if i == 4 else 1
            engine.add_request(str(i), prompt, SamplingParams(temperature=0.0, n=n, **params))
        outputs += run_to_completion(engine)
    finally:
        engine.shutdown()
    tokens = {o.request_id: [c.token_ids for c in o.outputs] for o in outputs if o.finished}
    return tokens, preemptions.count, hits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def one_rank(tiny) -> dict[str, list[list[int]]]:
    tokens, preemptions, hits = run_workload(tiny)
    assert preemptions > 0 and hits > 0  # the workload exercises what it claims to
    assert len(tokens) == 6
    return tokens


@pytest.mark.parametrize(
    "parallel",
    [
        {"tensor_parallel_size": 2, "async_scheduling": True},
        {"pipeline_parallel_size": 2},
        {"tensor_parallel_size": 2, "pipeline_parallel_size": 2},
    ],
    ids=["tp2-async", "pp2", "tp2xpp2"],
)
def test_parallel_greedy_equals_one_rank(tiny, one_rank, parallel) -> None:
    tokens, preemptions, _ = run_workload(tiny, **parallel)
    assert preemptions > 0
    assert tokens == one_rank


def test_hung_worker_is_noticed_within_seconds(tiny) -> None:
    config = EngineConfig(model=str(tiny), dtype="float32", pipeline_parallel_size=2)
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    worker = engine.runner.procs[1]
    try:
        os.kill(worker.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        with pytest.raises(WorkerFailure, match="no heartbeat"):
            while time.monotonic() - stopped < 30:
                engine.check_health()
                time.sleep(0.1)
        assert time.monotonic() - stopped < HEARTBEAT_TIMEOUT_S + 3
        # Failing stops every worker, the hung one too: its pid is gone or a zombie (killed,
        # not yet reaped), whichever thread reaps it.
        deadline = time.monotonic() + 10
        while not _gone(worker.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(worker.pid)
    finally:
        engine.shutdown()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_heads_not_dividing_is_a_one_line_error_at_start(tiny) -> None:
    config = EngineConfig(model=str(tiny), dtype="float32", tensor_parallel_size=3)
    with pytest.raises(
        ValueError, match="^num_attention_heads 4 is not divisible by tensor_parallel_size 3$"
    ):
        LLMEngine(config, tokenizer=object(), log_stats=False)


def free_port_run(n: int) -> int:
    """A port p with p .. p + n - 1 all free on loopback."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + n > 65535:
            continue
        try:
            for p in range(port + 1, port + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


def test_two_nodes_on_loopback_equal_one_rank(tiny, one_rank) -> None:
    """Pipeline stage 2 on a second "node": `pagoda serve --node-rank 1` in a session of its own,
    meeting node 0's engine through MASTER_ADDR:MASTER_PORT alone."""
    port = free_port_run(3)
    nodes = {"nnodes": 2, "master_addr": "127.0.0.1", "master_port": port}
    node1 = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pagoda.engine.cli",
            "serve",
            str(tiny),
            "--dtype",
            "float32",
            "--pipeline-parallel-size",
            "2",
            "--block-size",
            "4",
            "--num-gpu-blocks-override",
            "18",
            "--max-model-len",
            "64",
            "--nnodes",
            "2",
            "--node-rank",
            "1",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
        ],
        start_new_session=True,
    )
    try:
        tokens, _, _ = run_workload(tiny, pipeline_parallel_size=2, **nodes)
        assert tokens == one_rank
        assert node1.wait(timeout=30) == 0  # its workers stopped with node 0's engine
    finally:
        if node1.poll() is None:
            os.killpg(node1.pid, signal.SIGKILL)


def test_default_model_offline_in_two_stages_equals_one_process() -> None:
    """The offline API takes vLLM's options: LLM(..., pipeline_parallel_size=2) on the CPU. (The
    default model's 9 attention heads split over 3 tensor-parallel ranks, not 2.)"""
    prompts = ["The capital of France is", "def add(a, b):"]
    params = SamplingParams(temperature=0.0, max_tokens=8)
    whole = [o.outputs[0].token_ids for o in LLM(max_model_len=256).generate(prompts, params)]
    staged = LLM(max_model_len=256, pipeline_parallel_size=2, tensor_parallel_size=1)
    try:
        assert [o.outputs[0].token_ids for o in staged.generate(prompts, params)] == whole
    finally:
        staged.engine.shutdown()


def sampling_kinds(folder: Path, **parallel) -> dict[str, list]:
    """Beam search, seeded sampling with n = 2, penalties with logprobs: the rows that carry
    state (generators, beam log-probabilities, top-k logprobs) across the process boundary."""
    config = EngineConfig(model=str(folder), dtype="float32", max_model_len=128, **parallel)
    engine = LLMEngine(config, tokenizer=object(), log_stats=False)
    common = {"max_tokens": 6, "ignore_eos": True, "detokenize": False}
    try:
        engine.add_request(
            "beam", [5, 6, 7, 8], SamplingParams(use_beam_search=True, n=2, best_of=3, **common)
        )
        engine.add_request(
            "seeded", [9, 10], SamplingParams(temperature=0.9, seed=3, n=2, **common)
        )
        engine.add_request(
            "penalized",
            [9, 10, 11],
            SamplingParams(temperature=0.0, repetition_penalty=1.3, logprobs=2, **common),
        )
        outputs = run_to_completion(engine)
    finally:
        engine.shutdown()
    return {
        o.request_id: [
            (c.token_ids, c.logprobs and [sorted(d) for d in c.logprobs]) for c in o.outputs
        ]
        for o in outputs
        if o.finished
    }


def test_beams_seeds_and_logprobs_through_tp2_workers(tiny) -> None:
    whole = sampling_kinds(tiny)
    assert len(whole) == 3 and len(whole["beam"]) == 2 and whole["penalized"][0][1]
    assert sampling_kinds(tiny, tensor_parallel_size=2) == whole
