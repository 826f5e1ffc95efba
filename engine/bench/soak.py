"""`pagoda bench soak`: many random requests against one running server, some abandoned midway.

Each request draws its prompt length, output length and sampling parameters (within the bounds
SamplingParams accepts), whether it streams, and whether the client leaves after a few chunks.
The server must answer each with 200 (or the client's own departure); afterwards nothing may be
running or waiting, the KV cache must be empty again, and the server's RSS (with --pid) must not
have grown past --max-rss-growth-mib after the first --warmup-requests (until then the KV pool's
pages are being committed: on the CPU they come from calloc and count once first written).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families


def add_soak_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server, without /v1")
    p.add_argument("--num-requests", type=int, default=10_000)
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--input-len", type=int, nargs=2, default=[1, 64], metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, default=[1, 32], metavar=("MIN", "MAX"))
    p.add_argument("--vocab-size", type=int, default=32000, help="prompt token ids below this")
    p.add_argument("--disconnect-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--pid",
        type=int,
        default=None,
        help="the server's pid, to read its (and its children's) RSS",
    )
    p.add_argument(
        "--max-rss-growth-mib",
        type=float,
        default=200.0,
        help="bound on RSS growth after the warm-up (the KV pool's pages are committed as blocks "
        "are first written: give the server a small --kv-cache-memory-bytes to reach it early)",
    )
    p.add_argument(
        "--warmup-requests",
        type=int,
        default=500,
        help="RSS growth counts from this many finished requests on",
    )
    p.add_argument("--report-every", type=int, default=1000, help="a progress line per this many")


def random_request(rng: random.Random, args: argparse.Namespace) -> dict:
    body: dict = {
        "prompt": [rng.randrange(args.vocab_size) for _ in range(rng.randint(*args.input_len))],
        "max_tokens": rng.randint(*args.output_len),
        "temperature": rng.choice([0.0, 1e-5, 0.7, 1.0, 2.0, 100.0]),
        "top_p": rng.choice([1.0, 0.9, 0.1, 1e-30]),
        "top_k": rng.choice([0, -1, 1, 50, 2**62]),
        "min_p": rng.choice([0.0, 0.05, 1.0]),
        "presence_penalty": rng.uniform(-2, 2),
        "frequency_penalty": rng.uniform(-2, 2),
        "repetition_penalty": rng.choice([1.0, 1e-4, 1.3, 1e4]),
        "n": rng.choice([1, 1, 1, 2]),
        "stream": rng.random() < 0.5,
        "ignore_eos": True,
    }
    if rng.random() < 0.3:
        body["seed"] = rng.randrange(-(2**63), 2**63 - 2)
    if rng.random() < 0.2:
        body["logprobs"] = rng.randint(0, 20)
    if rng.random() < 0.2:
        body["logit_bias"] = {str(rng.randrange(args.vocab_size)): rng.uniform(-100, 100)}
    return body


async def one(client: httpx.AsyncClient, body: dict, leave_after: int | None) -> str:
    """The outcome: "ok", "left" (the client went away on purpose) or what went wrong."""
    if not body["stream"]:
        if leave_after is not None:
            try:
                await asyncio.wait_for(client.post("/v1/completions", json=body), 0.05)
            except TimeoutError:
                return "left"
        r = await client.post("/v1/completions", json=body)
        return "ok" if r.status_code == 200 else f"HTTP {r.status_code}: {r.text[:200]}"
    async with client.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            return f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
        chunks = 0
        async for line in r.aiter_lines():
            if line.startswith("data: {") and '"error"' in line[:20]:
                return f"error event: {line[:200]}"
            chunks += line.startswith("data: ")
            if leave_after is not None and chunks >= leave_after:
                return "left"
            if line == "data: [DONE]":
                return "ok"
    return "stream ended without [DONE]"


def process_tree(pid: int) -> list[int]:
    """pid and its descendants: `pagoda serve` runs its engine core in a child process."""
    pids = [pid]
    for p in pids:
        for task in Path(f"/proc/{p}/task").iterdir():
            pids += [int(c) for c in (task / "children").read_text().split()]
    return pids


def rss_mib(pid: int | None) -> float | None:
    """The resident memory of the server's whole process tree."""
    if pid is None:
        return None
    total_kib = 0
    for p in process_tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def gauges(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    wanted = (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    )
    return {
        s.name: s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in wanted
    }


async def soak(args: argparse.Namespace) -> dict:
    rng = random.Random(args.seed)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    gate = asyncio.Semaphore(args.max_concurrency)
    rss_before = rss_mib(args.pid)
    rss_warm = rss_before
    started = time.monotonic()
    timeout = httpx.Timeout(600.0)
    limits = httpx.Limits(max_connections=args.max_concurrency)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=timeout, limits=limits) as client:

        async def run(body: dict, leave_after: int | None) -> None:
            nonlocal rss_warm
            async with gate:
                outcome = await one(client, body, leave_after)
            outcomes[outcome if outcome in ("ok", "left") else "failed"] += 1
            if outcome not in ("ok", "left"):
                failures.append(outcome)
            done = sum(outcomes.values())
            if done == min(args.warmup_requests, args.num_requests):
                rss_warm = rss_mib(args.pid)
            if done % args.report_every == 0:
                progress = {"done": done, "seconds": round(time.monotonic() - started, 1)}
                print(json.dumps(progress | dict(outcomes) | {"rss_mib": rss_mib(args.pid)}))

        jobs = []
        for _ in range(args.num_requests):
            body = random_request(rng, args)
            leave = rng.randint(1, 4) if rng.random() < args.disconnect_fraction else None
            jobs.append(run(body, leave))
        await asyncio.gather(*jobs)
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 30
    after = gauges(args.base_url)
    while any(after.values()) and time.monotonic() < deadline:  # aborts land within a step
        await asyncio.sleep(0.2)
        after = gauges(args.base_url)
    rss_after = rss_mib(args.pid)
    growth = None if rss_warm is None or rss_after is None else rss_after - rss_warm
    return {
        "requests": args.num_requests,
        "seconds": round(elapsed, 1),
        "outcomes": dict(outcomes),
        "first_failures": failures[:5],
        "after": after,
        "rss_mib_before": rss_before,
        "rss_mib_after_warmup": rss_warm,
        "rss_mib_after": rss_after,
        "rss_growth_mib": growth,  # after the warm-up
    }


def run_soak(args: argparse.Namespace) -> int:
    report = asyncio.run(soak(args))
    print(json.dumps(report, indent=2))
    clean = not report["first_failures"] and not any(report["after"].values())
    bounded = (
        report["rss_growth_mib"] is None or report["rss_growth_mib"] <= args.max_rss_growth_mib
    )
    return 0 if clean and bounded else 1
