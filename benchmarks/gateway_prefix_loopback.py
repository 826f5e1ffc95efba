"""Prefix routing against round-robin on loopback (docs/performance.md): a measurement.

    python benchmarks/gateway_prefix_loopback.py [--kv-mib 134] [--rounds 3] [--rules 30]

The e2e test's multi-tenant workload (tests/e2e/tenants.py) against two real `pagoda serve`
processes (SmolLM2-135M, float32) behind the gateway's app, its registry filled by hand (pods
`pod-0` and `pod-1`), one gateway process per policy. Round 0 fills the caches and is not
measured. Prints, per policy, the prefix-cache hit rate (the engines' counters) and the TTFT mean
and median over the measured rounds, and each TTFT.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from aiohttp import web
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))
import tenants  # the e2e test's workload, from its folder

PODS = ["pod-0", "pod-1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_gateway(port: int, engine_ports: list[int], policy: str) -> None:
    from pagoda.gateway.app import GatewaySettings, build
    from pagoda.gateway.registry import Endpoint, Registry

    registry = Registry()
    spec = {"model": {"servedName": "smol"}, "routing": policy}
    registry.upsert_isvc({"metadata": {"name": "pair", "namespace": "ns"}, "spec": spec})
    backend = registry.lookup("smol")
    assert backend is not None
    backend.set_slice(
        "s", [Endpoint(pod, "127.0.0.1", p) for pod, p in zip(PODS, engine_ports, strict=True)]
    )
    app = build(GatewaySettings(), registry, None)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, handler_cancellation=True
    )


def prefix_counters(ports: list[int]) -> tuple[float, float]:
    """(hits, queries) of vllm:prefix_cache_*, summed over the engines."""
    hits = queries = 0.0
    for p in ports:
        for family in text_string_to_metric_families(
            httpx.get(f"http://127.0.0.1:{p}/metrics").text
        ):
            for s in family.samples:
                hits += s.value if s.name == "vllm:prefix_cache_hits_total" else 0
                queries += s.value if s.name == "vllm:prefix_cache_queries_total" else 0
    return hits, queries


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"pagoda serve on {port} exited ({proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    sys.exit(f"pagoda serve on {port} not healthy after {timeout:g}s")


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--kv-mib", type=float, default=134.0, help="each engine's KV pool")
    p.add_argument("--rounds", type=int, default=3, help="rounds, the first unmeasured")
    p.add_argument("--rules", type=int, default=tenants.RULES, help="system prompt length")
    args = p.parse_args()
    tenants.RULES = args.rules
    ports = [free_port() for _ in PODS]
    serve = [sys.executable, "-m", "pagoda.engine.cli", "serve", "--host", "127.0.0.1"]
    engine_args = ["--uvicorn-log-level", "warning", "--served-model-name", "smol",
                   "--max-num-seqs", "4", "--max-model-len", "1024", "--dtype", "float32",
                   "--kv-cache-memory-bytes", str(int(args.kv_mib * 2**20))]  # fmt: skip
    engines = [subprocess.Popen([*serve, "--port", str(port), *engine_args]) for port in ports]
    try:
        for port, proc in zip(ports, engines, strict=True):
            wait_healthy(port, proc)
        print(f"KV pool {args.kv_mib:g} MiB, {args.rules} rules, {args.rounds} rounds "
              f"(round 0 unmeasured), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        for policy in ("round-robin", "prefix"):
            port = free_port()
            gateway = multiprocessing.Process(
                target=serve_gateway, args=(port, ports, policy), daemon=True
            )
            gateway.start()
            time.sleep(3)
            client = OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600
            )
            systems = tenants.handbooks(policy, PODS)
            tenants.one_round(client, "smol", systems, 0)
            before = prefix_counters(ports)
            ttfts = [
                t
                for r in range(1, args.rounds)
                for t in tenants.one_round(client, "smol", systems, r)
            ]
            after = prefix_counters(ports)
            hit_rate = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            print(
                f"{policy}: prefix-cache hit rate {hit_rate:.2f}, TTFT mean "
                f"{statistics.mean(ttfts):.3f} s, median {statistics.median(ttfts):.3f} s; "
                f"load average {os.getloadavg()[0]:.1f}\n  " + " ".join(f"{t:.2f}" for t in ttfts)
            )
            gateway.terminate()
            gateway.join()
    finally:
        for proc in engines:
            proc.terminate()
        for proc in engines:
            proc.wait()


if __name__ == "__main__":
    main()
