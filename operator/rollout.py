"""The rollout gate: are the new revision's pods good enough to keep?

Pure. The handlers gather what the new pods did and act on the verdict: promote (their spec
becomes the stable one), roll back (pods are rendered from the stable spec again), or wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from pagoda.operator.spec import Analysis

MAX_RESTARTS = 2  # one restart can be a node hiccup; two during a rollout is a broken revision


@dataclass(frozen=True)
class NewPod:
    """One pod of the new revision, judged from its own start: a rollout of N pods with maxSurge 1
    loads the model N times one after another, and no single pod should pay for the others."""

    name: str
    age_seconds: float  # since this pod started (its status.startTime, else its creation)
    ready: bool
    restarts: int  # container restarts within this pod


@dataclass(frozen=True)
class Observation:
    desired: int  # pods the new revision should have
    pods: tuple[NewPod, ...]  # the new revision's pods that exist
    requests: float  # requests the new pods finished within the analysis window
    errors: float
    ttft_p95: float | None
    covered_seconds: float  # how much of the analysis window the new pods' samples span

    @property
    def ready(self) -> int:
        return sum(p.ready for p in self.pods)


@dataclass(frozen=True)
class Verdict:
    action: str  # wait | promote | rollback
    reason: str  # CamelCase, for conditions and Events
    message: str


def judge(analysis: Analysis | None, startup_timeout_seconds: int, o: Observation) -> Verdict:
    crashing = [p for p in o.pods if p.restarts >= MAX_RESTARTS]
    if crashing:
        worst = max(crashing, key=lambda p: p.restarts)
        return Verdict(
            "rollback", "NewPodsCrashing", f"new pod {worst.name} restarted {worst.restarts} times"
        )
    late = [p for p in o.pods if not p.ready and p.age_seconds > startup_timeout_seconds]
    if late:
        return Verdict(
            "rollback",
            "StartupTimeout",
            f"new pod {late[0].name} not ready {late[0].age_seconds:.0f}s after its start "
            f"(startupTimeoutSeconds {startup_timeout_seconds}); {o.ready}/{o.desired} new pods ready",
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
