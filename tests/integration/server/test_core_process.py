"""`pagoda serve` runs the engine core in its own process (vLLM v1's split): greedy output through
it equals the offline `LLM`'s, which runs the same core in-process; a killed core is noticed
within seconds (/health 503, the request in flight fails, the server exits non-zero) and leaves
no process behind. Speculative decoding runs in the core: several tokens of a sequence in one
core output, detokenized on the API side, the counts on /metrics."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_process import ServerProcess

from pagoda.engine.llm import LLM
from pagoda.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.integration

PROMPTS = ["Hello, my name is", "The capital of France is", "Count: 1, 2, 3,"]
ARGS = ("--max-model-len", "256", "--max-num-seqs", "4", "--num-gpu-blocks-override", "64")


def spawned_children(pid: int) -> list[int]:
    """The process's children started by multiprocessing's spawn (not its resource tracker)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(*ARGS)
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


def test_greedy_through_the_core_process_equals_offline(server):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    online = [
        client.completions.create(
            model="default", prompt=p, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
        for p in PROMPTS
    ]
    llm = LLM(max_model_len=256, max_num_seqs=4, num_gpu_blocks_override=64)
    offline = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))
    assert online == [o.outputs[0].text for o in offline]
    assert all(online), "text was generated"


def test_speculative_decoding_through_the_core_process_equals_offline_without_it():
    ngram = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}
    prompt = "Repeat after me: one two three four five six. Again: one two three four five six."
    spec = ServerProcess(*ARGS, "--speculative-config", json.dumps(ngram))
    try:
        spec.wait_healthy()
        client = openai.OpenAI(base_url=f"{spec.url}/v1", api_key="none", max_retries=0)
        streamed = client.completions.create(
            model="default", prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        online = "".join(chunk.choices[0].text for chunk in streamed)
        metrics = spec.metrics()
    finally:
        spec.kill()
    llm = LLM(max_model_len=256, max_num_seqs=4, num_gpu_blocks_override=64)
    [offline] = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=24))
    assert online and online == offline.outputs[0].text
    accepted = sum(
        v
        for (name, _), v in metrics.items()
        if name == "vllm:spec_decode_num_accepted_tokens_total"
    )
    assert accepted > 0, "drafts were accepted (several tokens in one core output)"


def test_killed_core_fails_health_and_requests_and_exits_nonzero(server):
    """Last in the module: it ends the server."""
    (core,) = spawned_children(server.proc.pid)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0)
    errors: list[BaseException] = []
    started = threading.Event()

    def stream() -> None:
        try:
            for _ in client.completions.create(
                model="default",
                prompt="Count:",
                max_tokens=200,
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
    os.kill(core, signal.SIGKILL)
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
    assert first_503 is not None and first_503 - killed_at < 5  # noticed within seconds
    assert errors, "the request in flight ended without an error"
    assert "engine core process" in server.output()
    assert not alive(core)
