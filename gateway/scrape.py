"""The engines' own load figures for routing: every few seconds, each Ready pod's /metrics gives
vllm:num_requests_waiting and vllm:kv_cache_usage_perc (summed over the models a pod serves)."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from pagoda.gateway.registry import Endpoint, Registry

log = logging.getLogger(__name__)


def parse_load(text: str) -> tuple[float, float]:
    """(waiting, kv usage) from Prometheus text; only the two gauges are read."""
    waiting = kv = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:num_requests_waiting"):
            waiting += float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:kv_cache_usage_perc"):
            kv = max(kv, float(line.rsplit(" ", 1)[1]))
    return waiting, kv


async def scrape_forever(
    session: aiohttp.ClientSession, registry: Registry, interval: float
) -> None:
    while True:
        endpoints = [e for b in registry.backends() for e in b.endpoints]
        await asyncio.gather(*(_scrape(session, e, interval) for e in endpoints))
        await asyncio.sleep(interval)


async def _scrape(session: aiohttp.ClientSession, e: Endpoint, timeout: float) -> None:
    try:
        async with session.get(
            f"{e.url}/metrics", timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            e.waiting, e.kv_usage = parse_load(await r.text())
    except (aiohttp.ClientError, TimeoutError, ValueError, IndexError) as err:
        log.debug("scrape of %s failed: %s", e.pod, err)
        e.waiting = e.kv_usage = 0.0
