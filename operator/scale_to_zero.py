"""Scale to zero and back, for autoscaling.minReplicas 0 (pure: decisions on what was observed).

Idle means no pod had a request running or waiting and none finished one for
`scaleToZeroAfterSeconds`; then the replicas go to 0. At zero, `pagoda gateway` holds the model's
requests and sets the annotation WAKE_ANNOTATION to the time it asked; a request newer than the
moment of going to zero brings one replica back. Between the two, the ordinary autoscaler acts
with a floor of 1, so a busy model never drops to zero on its load metric alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pagoda.operator.metrics_scrape import Sample
from pagoda.operator.spec import WAKE_ANNOTATION, Autoscaling


@dataclass
class IdleState:
    """Per InferenceService, in the operator's memory (a restarted operator waits a whole window)."""

    last_active: float | None = None
    finished: dict[str, float] = field(
        default_factory=dict
    )  # pod -> requests finished, last scrape
    slept_at: float | None = None


@dataclass(frozen=True)
class Move:
    replicas: int
    reason: str  # the Event's reason: ScaledToZero | ScaledFromZero
    message: str


def wake_time(body: dict[str, Any]) -> float | None:
    value = (body["metadata"].get("annotations") or {}).get(WAKE_ANNOTATION)
    try:
        return datetime.fromisoformat(value).timestamp() if value else None
    except ValueError:
        return None  # not a time: nobody we know wrote it


def observe(
    state: IdleState, scraped: dict[str, Sample], wake_at: float | None, now: float
) -> None:
    """Remember the last moment of activity: a request in a pod, one finished since the last
    scrape, or a wake request."""
    busy = any(x.running + x.waiting > 0 for x in scraped.values())
    for pod, x in scraped.items():
        total = sum(x.finished.values())
        busy |= total > state.finished.get(pod, total)
        state.finished[pod] = total
    state.finished = {p: n for p, n in state.finished.items() if p in scraped}
    latest = [t for t in (state.last_active, wake_at) if t is not None]
    state.last_active = now if busy or not latest else max(latest)


def decide(
    a: Autoscaling, current: int, state: IdleState, wake_at: float | None, now: float
) -> Move | None:
    """A move to or from zero, or None: the ordinary autoscaler decides (with a floor of 1)."""
    if current == 0:
        since = (
            state.slept_at if state.slept_at is not None else now - a.scale_to_zero_after_seconds
        )
        if wake_at is not None and wake_at > since:
            state.last_active, state.slept_at = now, None
            return Move(1, "ScaledFromZero", "0 -> 1: a request is waiting at the gateway")
        return Move(0, "", "")  # stay at zero until asked
    idle = now - (state.last_active if state.last_active is not None else now)
    if idle >= a.scale_to_zero_after_seconds:
        state.slept_at = now
        return Move(0, "ScaledToZero", f"{current} -> 0: no request for {idle:.0f}s")
    return None
