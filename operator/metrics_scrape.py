"""Read engine pods' /metrics and turn samples over a window into the figures the operator acts on.

Parsing and window arithmetic are pure; `scrape` is the one function that touches the network.
Counters and histograms are cumulative, so a window's figure is the difference between its newest
and oldest sample; a counter that went down means the pod restarted (Prometheus' reset rule:
the newer sample alone is the increase).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

# finished_reason values that count against a rollout. "abort" is not one: it is the client that
# went away (a closed stream, a timeout on its side), which says nothing about the revision.
ERROR_REASONS = ("error",)


@dataclass(frozen=True)
class Sample:
    """One pod's /metrics at one time, summed over label sets (engines, models)."""

    time: float
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0
    generation_tokens: float = 0.0
    finished: dict[str, float] = field(default_factory=dict)  # finished_reason -> count
    ttft: tuple[tuple[float, float], ...] = ()  # (le, cumulative count), le ascending, +Inf last


def parse(text: str, time: float) -> Sample:
    """Raises ValueError on text that is not the Prometheus exposition format."""
    gauges = {
        "vllm:num_requests_running": 0.0,
        "vllm:num_requests_waiting": 0.0,
        "vllm:kv_cache_usage_perc": 0.0,
    }
    kv_series = 0
    tokens = 0.0
    finished: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in gauges:
                gauges[s.name] += s.value
                kv_series += s.name == "vllm:kv_cache_usage_perc"
            elif s.name == "vllm:generation_tokens_total":
                tokens += s.value
            elif s.name == "vllm:request_success_total":
                reason = s.labels.get("finished_reason", "")
                finished[reason] = finished.get(reason, 0.0) + s.value
            elif s.name == "vllm:time_to_first_token_seconds_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return Sample(
        time=time,
        running=gauges["vllm:num_requests_running"],
        waiting=gauges["vllm:num_requests_waiting"],
        # Several engines in one pod: their mean usage, not the sum.
        kv_usage=gauges["vllm:kv_cache_usage_perc"] / max(kv_series, 1),
        generation_tokens=tokens,
        finished=finished,
        ttft=tuple(sorted(buckets.items())),
    )


def increase(new: float, old: float | None) -> float:
    if old is None or new < old:
        return new
    return new - old


def bucket_increase(
    new: tuple[tuple[float, float], ...], old: tuple[tuple[float, float], ...] | None
) -> list[tuple[float, float]]:
    if not old or [le for le, _ in new] != [le for le, _ in old] or new[-1][1] < old[-1][1]:
        return list(new)  # no baseline, other buckets, or a restart
    return [(le, n - o) for (le, n), (_, o) in zip(new, old)]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket; the +Inf bucket answers its lower edge."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_le
            if count == lower_count:
                return le
            return lower_le + (le - lower_le) * (rank - lower_count) / (count - lower_count)
        lower_le, lower_count = le, count
    return lower_le


def add_buckets(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    if not a:
        return list(b)
    if [le for le, _ in a] != [le for le, _ in b]:
        raise ValueError("histograms with different buckets cannot be summed")
    return [(le, x + y) for (le, x), (_, y) in zip(a, b)]


@dataclass(frozen=True)
class WindowStats:
    """What a set of pods did over a window."""

    requests: float
    errors: float
    ttft_p95: float | None
    tokens_per_second: float
    covered_seconds: float  # how much of the window the samples span (less while history builds up)


class History:
    """The recent samples of each pod, kept for `keep_seconds`."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self.samples: dict[str, deque[Sample]] = {}

    def add(self, pod: str, sample: Sample) -> None:
        q = self.samples.setdefault(pod, deque())
        q.append(sample)
        # Keep one sample at or before the oldest window start: it is that window's baseline.
        while len(q) > 1 and q[1].time <= sample.time - self.keep_seconds:
            q.popleft()

    def forget_except(self, pods: set[str]) -> None:
        for gone in set(self.samples) - pods:
            del self.samples[gone]

    def latest(self, pod: str) -> Sample | None:
        q = self.samples.get(pod)
        return q[-1] if q else None

    def window(self, pods: list[str], seconds: float, now: float) -> WindowStats:
        """Increases from each pod's last sample at or before the window start (else its oldest)
        to its newest; a pod whose newest sample is older than the window has stopped and is left out."""
        requests = errors = tokens = covered = 0.0
        ttft: list[tuple[float, float]] = []
        for pod in pods:
            q = self.samples.get(pod)
            if not q or q[-1].time < now - seconds:
                continue
            new = q[-1]
            old = next((s for s in reversed(q) if s.time <= now - seconds), q[0])
            if old is new:
                continue
            for reason, n in new.finished.items():
                inc = increase(n, old.finished.get(reason))
                requests += inc
                errors += inc if reason in ERROR_REASONS else 0.0
            tokens += increase(new.generation_tokens, old.generation_tokens) / (new.time - old.time)
            covered = max(covered, new.time - old.time)
            if new.ttft:
                ttft = add_buckets(ttft, bucket_increase(new.ttft, old.ttft))
        return WindowStats(
            requests=requests,
            errors=errors,
            ttft_p95=quantile(0.95, ttft),
            tokens_per_second=tokens,
            covered_seconds=covered,
        )


async def scrape(
    client: httpx.AsyncClient, urls: dict[str, str], time: float
) -> dict[str, Sample | None]:
    """pod -> its sample, or None where the pod did not answer with valid metrics."""

    async def one(url: str) -> Sample | None:
        try:
            r = await client.get(url)
            r.raise_for_status()
            # Parsing is CPU work: off the event loop, which serves every other object's handlers.
            return await asyncio.to_thread(parse, r.text, time)
        except (httpx.HTTPError, ValueError):
            return None

    results = await asyncio.gather(*(one(u) for u in urls.values()))
    return dict(zip(urls, results))
