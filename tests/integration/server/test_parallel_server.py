"""`pagoda serve` over worker processes (the default model in two pipeline stages, gloo): a
killed worker is noticed within seconds (its request in flight fails, the server exits non-zero)
and SIGTERM ends the server with its engine-core process and the workers that process started;
no process outlives it."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess

pytestmark = pytest.mark.integration

ARGS = ("--pipeline-parallel-size", "2", "--max-model-len", "512", "--max-num-seqs", "4")


def spawned_children(pid: int) -> list[int]:
    """The process's children started by multiprocessing's spawn (not its resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def core_and_workers(pid: int) -> tuple[int, list[int]]:
    """The server's engine-core process, and the worker processes it started."""
    (core,) = spawned_children(pid)
    return core, spawned_children(core)


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has ended; only its parent's reaping is left


def test_killed_worker_fails_requests_and_exits_nonzero() -> None:
    server = ServerProcess(*ARGS).wait_healthy()
    try:
        core, workers = core_and_workers(server.proc.pid)
        assert len(workers) == 2
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        errors: list[BaseException] = []
        started = threading.Event()

        def stream() -> None:
            try:
                for _ in client.completions.create(
                    model="default",
                    prompt="Count:",
                    max_tokens=400,
                    stream=True,
                    extra_body={"ignore_eos": True},
                ):
                    started.set()
            except (openai.APIError, httpx.HTTPError) as e:
                errors.append(e)

        thread = threading.Thread(target=stream)
        thread.start()
        assert started.wait(60)
        killed_at = time.monotonic()
        os.kill(workers[1], signal.SIGKILL)
        first_503 = None
        while server.proc.poll() is None and time.monotonic() - killed_at < 30:
            try:
                if httpx.get(f"{server.url}/health", timeout=1).status_code == 503:
                    first_503 = first_503 or time.monotonic()
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        server.proc.wait(timeout=5)
        thread.join(10)
        assert server.proc.returncode not in (0, None)
        assert first_503 is not None and first_503 - killed_at < 10  # noticed within seconds
        assert errors, "the request in flight ended without an error"
        assert "died" in server.output()
        time.sleep(1)
        assert not [p for p in [core, *workers] if alive(p)]
    finally:
        server.kill()


def test_sigterm_stops_server_and_workers() -> None:
    server = ServerProcess(*ARGS).wait_healthy()
    try:
        core, workers = core_and_workers(server.proc.pid)
        assert len(workers) == 2
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
        done = client.completions.create(model="default", prompt="Hi", max_tokens=4, temperature=0)
        assert done.choices[0].finish_reason == "length"
        server.terminate()
        assert server.proc.wait(timeout=60) == 0
        time.sleep(1)
        assert not [p for p in [core, *workers] if alive(p)]
    finally:
        server.kill()
