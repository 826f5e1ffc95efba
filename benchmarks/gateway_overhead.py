"""The gateway's overhead on loopback (docs/performance.md): a measurement, not a test.

    python benchmarks/gateway_overhead.py [--streams 64] [--seconds 10] [--rounds 4]

Three processes: a stand-in engine (an SSE stream paced like a busy GPU engine: the first token
after --ttft-ms, then one every --itl-ms, --tokens in all; or, for a non-streaming request, a
small JSON body at once), one gateway process in front of it (its real request path: the app of
`pagoda gateway` with its registry filled by hand, no apiserver), and this load generator. With
at least 6 CPUs, each is pinned: the gateway to --gateway-cpus CPUs (2: "one replica on 2 cores"),
the stand-in to the next 2, the load generator to the rest; with 2 to 5 CPUs the gateway gets the
first CPU alone and the other two share the rest; either way neither of the others takes the
gateway's CPU. It reports
1. TTFT (request to the first SSE event) p50 / p99 at --streams concurrent streams, direct to
   the engine and through the gateway, in alternating rounds of the same run, and the difference;
2. the rate of small non-streaming requests one gateway process sustains at --streams concurrent
   (the engine alone, for reference), and the gateway's CPU time per request.

Each server is a child process of this script (`--serve engine|gateway`); the measurement starts
once both accept connections, and a child that exits first ends the run with its own output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "tok"}}]}\n\n'
STARTUP_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_engine(port: int, ttft: float, itl: float, tokens: int) -> None:
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


def serve_gateway(port: int, engine_port: int) -> None:
    from pagoda.gateway.app import GatewaySettings, build
    from pagoda.gateway.registry import Endpoint, Registry

    registry = Registry()
    registry.upsert_isvc({"metadata": {"name": "m", "namespace": "ns"}, "spec": {"model": {}}})
    backend = registry.lookup("m")
    assert backend is not None
    backend.set_slice("s", [Endpoint("engine", "127.0.0.1", engine_port)])
    app = build(GatewaySettings(), registry, None)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, handler_cancellation=True
    )


class Child:
    """One server as a child process (this script with --serve), its output kept in a file."""

    def __init__(self, role: str, port: int, cpus: list[int], args: list[str]) -> None:
        self.role, self.port = role, port
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115  (lives as long as the process)
            "w+", prefix=f"gateway-overhead-{role}-", suffix=".log"
        )
        pin = ["--cpus", ",".join(map(str, cpus))] if cpus else []
        cmd = [sys.executable, __file__, "--serve", role, "--port", str(port), *pin, *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-4000:]

    def wait_accepting(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Return once the child's port accepts a connection; exit this run, with the child's
        output, if it exits first or never listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(
                    f"the {self.role} process exited ({self.proc.returncode}) before listening "
                    f"on port {self.port}; its output:\n{self.output()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit(f"the {self.role} process is not listening on {self.port} after {timeout:g}s; "
                 f"its output:\n{self.output()}")  # fmt: skip

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            sys.exit(
                f"the {self.role} process exited ({self.proc.returncode}) during the run; "
                f"its output:\n{self.output()}"
            )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def placement(gateway_cpus: int) -> tuple[list[int], list[int], list[int]]:
    """CPUs for (gateway, engine, load generator). With gateway_cpus + 4 CPUs or more each gets its
    own; with fewer (a 2-core VM) the gateway has the first CPU to itself and the other two share
    the rest, so the gateway still never waits for them; on one CPU nothing is pinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return [], [], []
    try:
        os.sched_setaffinity(0, cpus)  # a sandbox may refuse pinning: then measure unpinned
    except OSError as e:
        print(f"pinning refused ({e}): nothing pinned")
        return [], [], []
    if len(cpus) < gateway_cpus + 4:
        return cpus[:1], cpus[1:], cpus[1:]
    return cpus[:gateway_cpus], cpus[gateway_cpus : gateway_cpus + 2], cpus[gateway_cpus + 2 :]


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
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}: {await r.text()}")
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
                    if r.status != 200:
                        raise RuntimeError(f"{url}: HTTP {r.status}")
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


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def measure(args: argparse.Namespace, engine: Child, gateway: Child) -> None:
    path = "/v1/completions"
    direct_url = f"http://127.0.0.1:{engine.port}{path}"
    gateway_url = f"http://127.0.0.1:{gateway.port}{path}"
    direct: list[float] = []
    via: list[float] = []
    await ttft_round(direct_url, args.streams, 2)  # warm both paths
    await ttft_round(gateway_url, args.streams, 2)
    for _ in range(args.rounds):
        direct += await ttft_round(direct_url, args.streams, 5)
        via += await ttft_round(gateway_url, args.streams, 5)
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
    engine_rate = await rate(direct_url, args.streams, args.seconds)
    cpu_before = cpu_seconds(gateway.proc.pid)
    gateway_rate = await rate(gateway_url, args.streams, args.seconds)
    cpu_per_request = (cpu_seconds(gateway.proc.pid) - cpu_before) / (gateway_rate * args.seconds)
    print(
        f"Requests/s, {args.streams} concurrent, small non-streaming answers, {args.seconds:g} s:"
    )
    print(f"  engine alone {engine_rate:8.0f}   through one gateway process {gateway_rate:8.0f}")
    print(
        f"  gateway CPU per request {cpu_per_request * 1e6:.0f} us "
        f"(one core's worth: {1 / cpu_per_request:.0f} requests/s)"
    )
    print(f"load average at the end: {loadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--ttft-ms", type=float, default=25.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--gateway-cpus", type=int, default=2, help="CPUs the gateway is pinned to")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="run all three under SCHED_FIFO (inherited by the children), ahead of whatever "
        "else the machine runs, as if each had its cores to itself",
    )
    # A child's role (internal): serve the stand-in engine or the gateway on --port.
    p.add_argument("--serve", choices=["engine", "gateway"], help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--cpus", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    if args.serve == "engine":
        serve_engine(args.port, args.ttft_ms / 1000, args.itl_ms / 1000, args.tokens)
        return
    if args.serve == "gateway":
        serve_gateway(args.port, args.upstream_port)
        return

    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    gateway_cpus, engine_cpus, load_cpus = placement(args.gateway_cpus)
    pacing = ["--ttft-ms", str(args.ttft_ms), "--itl-ms", str(args.itl_ms)]
    engine = Child("engine", free_port(), engine_cpus, [*pacing, "--tokens", str(args.tokens)])
    gateway = Child("gateway", free_port(), gateway_cpus, ["--upstream-port", str(engine.port)])
    try:
        engine.wait_accepting()
        gateway.wait_accepting()
        if load_cpus:
            os.sched_setaffinity(0, load_cpus)
            print(f"pinned: gateway to CPUs {gateway_cpus}, stand-in engine to {engine_cpus}, "
                  f"load generator to {load_cpus[0]}-{load_cpus[-1]}")  # fmt: skip
        else:
            print(f"not pinned ({os.cpu_count()} CPU)")
        if args.realtime:
            print("all three under SCHED_FIFO, priority 10")
        print(f"load average at the start: {loadavg()}")
        try:
            asyncio.run(measure(args, engine, gateway))
        finally:  # a child that died explains a failed request better than the request's error
            engine.check_alive()
            gateway.check_alive()
    finally:
        gateway.stop()
        engine.stop()


if __name__ == "__main__":
    main()
