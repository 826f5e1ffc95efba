"""The gateway's overhead on loopback (docs/performance.md): a measurement, not a test.

    python benchmarks/gateway_overhead.py [--streams 64] [--seconds 10] [--rounds 4]

Three processes: a stand-in engine (an SSE stream paced like a busy GPU engine: the first token
after --ttft-ms, then one every --itl-ms, --tokens in all; or, for a non-streaming request, a
small JSON body at once), one gateway process in front of it (its real request path: the app of
`pagoda gateway` with its registry filled by hand, no apiserver), and this load generator. It
reports
1. TTFT (request to the first SSE event) p50 / p99 at --streams concurrent streams, direct to
   the engine and through the gateway, in alternating rounds of the same run, and the difference;
2. the rate of small non-streaming requests one gateway process sustains at --streams concurrent
   (the engine alone, for reference), and the gateway's CPU time per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import time

import aiohttp
from aiohttp import web

EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "tok"}}]}\n\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_engine(port: int, ttft: float, itl: float, tokens: int) -> None:
    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"id": "x", "choices": [{"text": "ok"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(ttft)
        for i in range(tokens):
            if i:
                await asyncio.sleep(itl)
            await response.write(EVENT)
        await response.write(b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/completions", complete)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_gateway(port: int, engine_port: int) -> None:
    from pagoda.gateway.app import GatewaySettings, build
    from pagoda.gateway.registry import Endpoint, Registry

    registry = Registry()
    registry.upsert_isvc({"metadata": {"name": "m", "namespace": "ns"}, "spec": {"model": {}}})
    registry.lookup("m").set_slice("s", [Endpoint("engine", "127.0.0.1", engine_port)])
    app = build(GatewaySettings(), registry, None)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, handler_cancellation=True
    )


async def ttft_round(url: str, streams: int, per_stream: int) -> list[float]:
    body = json.dumps({"model": "m", "prompt": "hi", "stream": True})
    out: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def one_stream() -> None:
            for _ in range(per_stream):
                started = time.perf_counter()
                async with s.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.content.readuntil(b"\n\n")
                    out.append(time.perf_counter() - started)
                    await r.read()

        await asyncio.gather(*(one_stream() for _ in range(streams)))
    return out


async def rate(url: str, concurrency: int, seconds: float) -> float:
    body = json.dumps({"model": "m", "prompt": "hi"})
    done = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                async with s.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as r:
                    await r.read()
                    assert r.status == 200
                    done += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / seconds


def pct(xs: list[float], q: int) -> float:
    """The q-th percentile, in milliseconds."""
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(args: argparse.Namespace, engine: str, gateway: str, gateway_pid: int) -> None:
    path = "/v1/completions"
    direct: list[float] = []
    via: list[float] = []
    await ttft_round(engine + path, args.streams, 2)  # warm both paths
    await ttft_round(gateway + path, args.streams, 2)
    for _ in range(args.rounds):
        direct += await ttft_round(engine + path, args.streams, 5)
        via += await ttft_round(gateway + path, args.streams, 5)
    print(
        f"TTFT at {args.streams} concurrent streams (engine: first token after {args.ttft_ms:g} "
        f"ms, {args.tokens} tokens {args.itl_ms:g} ms apart), {len(direct)} requests each way:"
    )
    for name, xs in (("direct", direct), ("gateway", via)):
        print(f"  {name:8s} p50 {pct(xs, 50):7.2f} ms   p99 {pct(xs, 99):7.2f} ms")
    print(
        f"  added    p50 {pct(via, 50) - pct(direct, 50):7.2f} ms   "
        f"p99 {pct(via, 99) - pct(direct, 99):7.2f} ms"
    )
    engine_rate = await rate(engine + path, args.streams, args.seconds)
    cpu_before = cpu_seconds(gateway_pid)
    gateway_rate = await rate(gateway + path, args.streams, args.seconds)
    cpu_per_request = (cpu_seconds(gateway_pid) - cpu_before) / (gateway_rate * args.seconds)
    print(
        f"Requests/s, {args.streams} concurrent, small non-streaming answers, {args.seconds:g} s:"
    )
    print(f"  engine alone {engine_rate:8.0f}   through one gateway process {gateway_rate:8.0f}")
    print(
        f"  gateway CPU per request {cpu_per_request * 1e6:.0f} us "
        f"(one core's worth: {1 / cpu_per_request:.0f} requests/s)"
    )
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--ttft-ms", type=float, default=25.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    engine_port, gateway_port = free_port(), free_port()
    pacing = (args.ttft_ms / 1000, args.itl_ms / 1000, args.tokens)
    procs = [
        multiprocessing.Process(target=run_engine, args=(engine_port, *pacing), daemon=True),
        multiprocessing.Process(target=run_gateway, args=(gateway_port, engine_port), daemon=True),
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    try:
        asyncio.run(
            measure(
                args, f"http://127.0.0.1:{engine_port}", f"http://127.0.0.1:{gateway_port}",
                procs[1].pid,
            )
        )  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()


if __name__ == "__main__":
    main()
