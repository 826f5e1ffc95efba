"""The rollout gate: are the new revision's pods good enough to keep?

Pure. The handlers gather what the new pods did and act on the verdict: promote (their spec
becomes the stable one), roll back (pods are rendered from the stable spec again), or wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagoda.operator.spec import Analysis

MAX_RESTARTS = 2  # one restart can be a node hiccup; two during a rollout is a broken revision


@dataclass(frozen=True)
class Observation:
    elapsed_seconds: float  # since the rollout started
    desired: int  # pods the new revision should have
    ready: int  # new-revision pods ready
    restarts: int  # container restarts across the new-revision pods
    requests: float  # requests the new pods finished within the analysis window
    errors: float
    ttft_p95: float | None
    covered_seconds: float  # how much of the analysis window the new pods' samples span


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | promote | rollback
    reason: str  # CamelCase, for conditions and Events
    message: str


def judge(analysis: Analysis | None, startup_timeout_seconds: int, o: Observation) -> Verdict:
    if o.restarts >= MAX_RESTARTS:
        return Verdict("rollback", "NewPodsCrashing", f"new pods restarted {o.restarts} times")
    if o.ready < o.desired:
        if o.elapsed_seconds > startup_timeout_seconds:
            return Verdict(
                "rollback",
                "StartupTimeout",
                f"{o.ready}/{o.desired} new pods ready after {o.elapsed_seconds:.0f}s "
                f"(startupTimeoutSeconds {startup_timeout_seconds})",
            )
        if o.ready == 0:
            return Verdict("wait", "Starting", f"0/{o.desired} new pods ready")
    if analysis is None:
        if o.ready < o.desired:
            return Verdict("wait", "Starting", f"{o.ready}/{o.desired} new pods ready")
        return Verdict("promote", "PodsReady", f"{o.ready}/{o.desired} new pods ready")
    # Ready pods already serve traffic: a broken bound fails the rollout at once.
    if o.requests >= analysis.min_requests:
        rate = o.errors / o.requests
        if analysis.max_error_rate is not None and rate > analysis.max_error_rate:
            return Verdict(
                "rollback",
                "ErrorRate",
                f"new pods' error rate {rate:.1%} > maxErrorRate {analysis.max_error_rate:.1%} "
                f"over {o.requests:.0f} requests",
            )
        if (
            analysis.max_ttft_seconds_p95 is not None
            and o.ttft_p95 is not None
            and o.ttft_p95 > analysis.max_ttft_seconds_p95
        ):
            return Verdict(
                "rollback",
                "TTFT",
                f"new pods' TTFT p95 {o.ttft_p95:.3g}s > maxTTFTSecondsP95 "
                f"{analysis.max_ttft_seconds_p95:g}s over {o.requests:.0f} requests",
            )
    if o.ready < o.desired or o.covered_seconds < analysis.window_seconds:
        return Verdict(
            "wait",
            "Analyzing",
            f"{o.ready}/{o.desired} new pods ready, {o.covered_seconds:.0f}/{analysis.window_seconds}s "
            f"of metrics, {o.requests:.0f} requests",
        )
    if o.requests < analysis.min_requests:
        return Verdict(
            "promote",
            "NotEnoughTraffic",
            f"only {o.requests:.0f} requests in {analysis.window_seconds}s (< minRequests "
            f"{analysis.min_requests}): bounds not checked",
        )
    return Verdict(
        "promote",
        "AnalysisPassed",
        f"{o.requests:.0f} requests in {analysis.window_seconds}s within the bounds",
    )
