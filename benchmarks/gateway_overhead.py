"""The gateway's overhead on loopback (docs/performance.md): not a test, a measurement.

    .venv/bin/python tests/integration/gateway/overhead.py [--streams 64] [--seconds 10]

Three processes: a fast stand-in engine (answers at once: an SSE stream of 16 events, or a small
JSON body), the gateway in front of it (its real request path; the registry is filled by hand,
no apiserver), and this load generator. It reports
1. TTFT (request to first SSE event) p50 / p99 at N concurrent streams, direct to the engine and
   through the gateway, in alternating rounds of the same run, and the difference;
2. the request rate one gateway process sustains (small non-streaming requests, N concurrent),
   and the engine's own rate alone for reference.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import time

import aiohttp
from aiohttp import web

EVENT = b'data: {"choices": [{"delta": {"content": "tok"}}]}\n\n'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_engine(port: int) -> None:
    async def complete(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.json_response({"id": "x", "choices": [{"text": "ok"}]})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(16):
            await response.write(EVENT)
            await asyncio.sleep(0.005)
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


def pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[q - 1] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat, in clock ticks)."""
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(
    engine: str, gateway: str, gateway_pid: int, streams: int, seconds: float, rounds: int
) -> None:
    direct: list[float] = []
    via: list[float] = []
    await ttft_round(engine + "/v1/completions", streams, 2)  # warm both paths
    await ttft_round(gateway + "/v1/completions", streams, 2)
    for _ in range(rounds):
        direct += await ttft_round(engine + "/v1/completions", streams, 5)
        via += await ttft_round(gateway + "/v1/completions", streams, 5)
    print(f"TTFT at {streams} concurrent streams, {len(direct)} requests each way:")
    for name, xs in (("direct", direct), ("gateway", via)):
        print(f"  {name:8s} p50 {pct(xs, 50):7.2f} ms   p99 {pct(xs, 99):7.2f} ms")
    print(
        f"  added    p50 {pct(via, 50) - pct(direct, 50):7.2f} ms   "
        f"p99 {pct(via, 99) - pct(direct, 99):7.2f} ms"
    )
    engine_rate = await rate(engine + "/v1/completions", streams, seconds)
    cpu_before = cpu_seconds(gateway_pid)
    gateway_rate = await rate(gateway + "/v1/completions", streams, seconds)
    cpu_per_request = (cpu_seconds(gateway_pid) - cpu_before) / (gateway_rate * seconds)
    print(f"Requests/s, {streams} concurrent, small non-streaming answers, {seconds:g} s:")
    print(f"  engine alone {engine_rate:8.0f}   through one gateway process {gateway_rate:8.0f}")
    print(
        f"  gateway CPU per request {cpu_per_request * 1e6:.0f} us "
        f"(one core's worth: {1 / cpu_per_request:.0f} requests/s)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    engine_port, gateway_port = free_port(), free_port()
    procs = [
        multiprocessing.Process(target=run_engine, args=(engine_port,), daemon=True),
        multiprocessing.Process(target=run_gateway, args=(gateway_port, engine_port), daemon=True),
    ]
    for proc in procs:
        proc.start()
    time.sleep(3)
    try:
        asyncio.run(
            measure(
                f"http://127.0.0.1:{engine_port}",
                f"http://127.0.0.1:{gateway_port}",
                procs[1].pid,
                args.streams,
                args.seconds,
                args.rounds,
            )
        )
    finally:
        for proc in procs:
            proc.terminate()


if __name__ == "__main__":
    main()
