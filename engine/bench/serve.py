"""`pagoda bench serve`: drive any OpenAI-compatible server and report latency percentiles.

Like `vllm bench serve`: requests arrive as a Poisson process at --request-rate (inf: all at
once), at most --max-concurrency in flight; every request streams, so TTFT (time to the first
token), ITL (between streamed chunks), TPOT (per output token after the first) and E2EL (to the
last byte) are measured by the client, and the server's own usage counts the tokens.
The workload is W1's (random token ids, uniform lengths, seed 0), smaller with the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from pagoda.engine.bench.workload import random_workload

if TYPE_CHECKING:
    import httpx

WORDS = (
    "the of and to in is was for on as with by at from his her that this which or an be are "
    "time year people way day man thing woman life child world school state family student"
).split()


def add_bench_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", default="http://127.0.0.1:8000", help="the server, without /v1")
    p.add_argument(
        "--endpoint",
        default="/v1/completions",
        choices=["/v1/completions", "/v1/chat/completions"],
        help="completions send token-id prompts; chat sends text of random words",
    )
    p.add_argument(
        "--model", default=None, help="the served model name (default: the first in /v1/models)"
    )
    p.add_argument("--api-key", default=None)
    p.add_argument("--num-prompts", type=int, default=256)
    p.add_argument("--input-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"))
    p.add_argument("--output-len", type=int, nargs=2, default=[100, 1024], metavar=("MIN", "MAX"))
    p.add_argument(
        "--vocab-size", type=int, default=32000, help="random prompt token ids are drawn below this"
    )
    p.add_argument("--workload-seed", type=int, default=0)
    p.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="requests per second, Poisson arrivals (inf: send all at once)",
    )
    p.add_argument(
        "--max-concurrency", type=int, default=None, help="most requests in flight at once"
    )
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument(
        "--ignore-eos",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="generate exactly the drawn output length (a vLLM extra field)",
    )
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument(
        "--metric-percentiles", default="50,90,99", help="comma-separated percentiles to report"
    )
    p.add_argument("--result-file", default=None, help="write the results as JSON here")
    p.add_argument("--disable-tqdm", action="store_true")


@dataclass
class RequestResult:
    ok: bool = False
    prompt_tokens: int = 0
    output_tokens: int = 0
    ttft: float = 0.0
    itls: list[float] = field(default_factory=list)
    e2el: float = 0.0
    error: str = ""


async def send(client: httpx.AsyncClient, url: str, body: dict, headers: dict) -> RequestResult:
    """One streamed request; timestamps from the client's side of the wire."""
    import httpx

    res = RequestResult()
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", url, json=body, headers=headers) as r:
            if r.status_code != 200:
                res.error = (
                    f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
                )
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    res.error = chunk["error"].get("message", str(chunk["error"]))
                    return res
                if chunk.get("usage"):
                    res.prompt_tokens = chunk["usage"]["prompt_tokens"]
                    res.output_tokens = chunk["usage"]["completion_tokens"]
                if not any(carries_token(c) for c in chunk.get("choices", [])):
                    continue
                now = time.perf_counter()
                if res.ttft == 0.0:
                    res.ttft = now - start
                else:
                    res.itls.append(now - last)
                last = now
        res.e2el = time.perf_counter() - start
        res.ok = res.ttft > 0.0
        if not res.ok:
            res.error = "no tokens streamed"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        res.error = f"{type(e).__name__}: {e}"
    return res


def carries_token(choice: dict) -> bool:
    """Whether a streamed choice marks a token's arrival, as vLLM's benchmark client counts them:
    every completions chunk (one a token, its text empty when the token decodes to nothing yet:
    part of a UTF-8 character, or an id past the tokenizer's vocabulary under dummy weights);
    chat chunks with content (not the first, role-only, one). Skipping empty texts would merge
    several tokens' gaps into one inter-token latency."""
    if "delta" in choice:
        return bool((choice["delta"] or {}).get("content"))
    return "text" in choice


def request_bodies(args: argparse.Namespace, model: str) -> list[dict]:
    wl = random_workload(
        args.num_prompts,
        tuple(args.input_len),
        tuple(args.output_len),
        args.vocab_size,
        args.workload_seed,
    )
    common = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": args.temperature,
        "ignore_eos": args.ignore_eos,
    }
    if args.endpoint == "/v1/completions":
        return [common | {"prompt": p, "max_tokens": n} for p, n in zip(wl.prompts, wl.output_lens)]
    rng = random.Random(args.workload_seed)
    return [
        common
        | {
            "messages": [{"role": "user", "content": " ".join(rng.choices(WORDS, k=len(p)))}],
            "max_tokens": n,
        }
        for p, n in zip(wl.prompts, wl.output_lens)
    ]


async def arrivals(n: int, rate: float, seed: int):
    """Yield 0..n-1, spaced by exponential gaps of mean 1/rate (a Poisson process)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield i
        if rate != float("inf") and i < n - 1:
            await asyncio.sleep(rng.exponential(1.0 / rate))


async def benchmark(args: argparse.Namespace) -> dict:
    import httpx  # here, not at the top: `pagoda --help` builds this parser where httpx may be absent

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(
        max_connections=args.max_concurrency or args.num_prompts, max_keepalive_connections=None
    )
    async with httpx.AsyncClient(
        base_url=args.base_url, timeout=args.request_timeout, limits=limits
    ) as client:
        model = args.model
        if model is None:
            r = await client.get("/v1/models", headers=headers)
            r.raise_for_status()
            model = r.json()["data"][0]["id"]
        bodies = request_bodies(args, model)
        gate = asyncio.Semaphore(args.max_concurrency or len(bodies))
        bar = tqdm(total=len(bodies), disable=args.disable_tqdm, desc="requests", file=sys.stderr)

        async def one(body: dict) -> RequestResult:
            async with gate:
                res = await send(client, args.endpoint, body, headers)
            bar.update(1)
            return res

        start = time.perf_counter()
        tasks = [
            asyncio.create_task(one(bodies[i]))
            async for i in arrivals(len(bodies), args.request_rate, args.workload_seed)
        ]
        results = await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
        bar.close()
    return summarize(args, model, results, duration)


def summarize(
    args: argparse.Namespace, model: str, results: list[RequestResult], duration: float
) -> dict:
    ok = [r for r in results if r.ok]
    pcts = [float(p) for p in args.metric_percentiles.split(",")]
    out_tokens = sum(r.output_tokens for r in ok)
    in_tokens = sum(r.prompt_tokens for r in ok)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_url": args.base_url,
        "endpoint": args.endpoint,
        "model": model,
        "num_prompts": len(results),
        "request_rate": args.request_rate if args.request_rate != float("inf") else "inf",
        "max_concurrency": args.max_concurrency,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration,
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": len(ok) / duration,
        "output_throughput": out_tokens / duration,
        "total_token_throughput": (in_tokens + out_tokens) / duration,
    }
    tpots = [(r.e2el - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    series = {
        "ttft": [r.ttft for r in ok],
        "tpot": tpots,
        "itl": [x for r in ok for x in r.itls],
        "e2el": [r.e2el for r in ok],
    }
    for name, values in series.items():
        ms = np.asarray(values, dtype=float) * 1000 if values else np.zeros(1)
        summary[f"mean_{name}_ms"] = float(ms.mean())
        summary[f"std_{name}_ms"] = float(ms.std())
        for p in pcts:
            summary[f"p{p:g}_{name}_ms"] = float(np.percentile(ms, p))
    summary["errors"] = sorted({r.error for r in results if r.error})[:20]
    summary["per_request"] = [asdict(r) for r in results]
    return summary


def report(summary: dict, percentiles: list[str]) -> str:
    lines = ["{s:=^60}".format(s=" Serving Benchmark Result ")]
    for key, label in [
        ("completed", "Successful requests"),
        ("failed", "Failed requests"),
        ("duration_s", "Benchmark duration (s)"),
        ("total_input_tokens", "Total input tokens"),
        ("total_output_tokens", "Total generated tokens"),
        ("request_throughput", "Request throughput (req/s)"),
        ("output_throughput", "Output token throughput (tok/s)"),
        ("total_token_throughput", "Total token throughput (tok/s)"),
    ]:
        v = summary[key]
        lines.append(f"{label:<44}{v:>16.2f}" if isinstance(v, float) else f"{label:<44}{v:>16}")
    for name, title in [
        ("ttft", "Time to First Token"),
        ("tpot", "Time per Output Token (excl. 1st token)"),
        ("itl", "Inter-token Latency"),
        ("e2el", "End-to-end Latency"),
    ]:
        lines.append(f"{title:-^60}")
        lines.append(f"{'Mean ' + name.upper() + ' (ms)':<44}{summary[f'mean_{name}_ms']:>16.2f}")
        for p in percentiles:
            lines.append(
                f"{f'P{p} {name.upper()} (ms)':<44}{summary[f'p{float(p):g}_{name}_ms']:>16.2f}"
            )
    lines.append("=" * 60)
    for e in summary["errors"]:
        lines.append(f"error: {e}")
    return "\n".join(lines)


def run_bench_serve(args: argparse.Namespace) -> int:
    if args.num_prompts < 1 or (args.max_concurrency is not None and args.max_concurrency < 1):
        raise ValueError("--num-prompts and --max-concurrency must be at least 1")
    if args.request_rate <= 0:
        raise ValueError("--request-rate must be positive (inf: all at once)")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per request
    summary = asyncio.run(benchmark(args))
    print(report(summary, args.metric_percentiles.split(",")))
    if args.result_file:
        with open(args.result_file, "w") as f:
            json.dump(summary, f, indent=2)
    return 0 if summary["completed"] else 1
