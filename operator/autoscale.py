"""The operator-mode autoscaler's decision: metric samples + remembered state -> replicas + reason.

Pure, and the same arithmetic as the Kubernetes HPA, so its behaviour is familiar:
1. recommendation: ceil(current * metric / target), unless within the tolerance; pods that did
   not report count as 0 when scaling up and as on-target when scaling down (a pod still loading
   its model neither forces a scale-up nor hides one); no reports at all -> hold;
2. stabilization: scale up to the lowest recommendation of the up-window, down to the highest of
   the down-window, so one burst or one quiet scrape does not move anything (and a fresh memory,
   after a restart, waits out a whole down-window before any scale-down);
3. rate limits: at most `pods` added (removed) per period, counted from what was done in it;
4. min and max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pagoda.operator.spec import Autoscaling


@dataclass
class ScalerState:
    """What the autoscaler remembers between decisions (kept in memory, per InferenceService)."""

    recommendations: list[tuple[float, int]] = field(default_factory=list)  # (time, replicas)
    changes: list[tuple[float, int]] = field(
        default_factory=list
    )  # (time, replicas added; < 0 removed)
    since: float | None = (
        None  # the first decision: a fresh memory has not seen a whole down-window
    )


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str

    def direction(self, current: int) -> str | None:
        return "up" if self.replicas > current else "down" if self.replicas < current else None


def recommend(a: Autoscaling, current: int, values: list[float | None]) -> tuple[int | None, str]:
    """The raw recommendation from per-pod values (one per expected pod; None = did not report).

    For TTFTSecondsP95 `values` holds the one quantile over all pods (None when no request
    finished its first token in the window: no traffic, so nothing needs capacity).
    """
    if a.metric == "TTFTSecondsP95":
        if not values:
            return None, "no pod reported metrics"
        p95 = values[0] or 0.0
        ratio = p95 / a.target
        what = f"TTFT p95 {p95:.3g}s vs target {a.target:g}s"
        if abs(ratio - 1) <= a.tolerance:
            return current, f"{what}: within tolerance"
        return math.ceil(current * ratio), what
    reported = [v for v in values if v is not None]
    if not reported:
        return None, "no pod reported metrics"
    missing = len(values) - len(reported)
    mean = sum(reported) / len(reported)
    what = f"{a.metric} {mean:.3g} per pod vs target {a.target:g} ({len(reported)}/{len(values)} pods reporting)"
    ratio = mean / a.target
    if abs(ratio - 1) <= a.tolerance:
        return current, f"{what}: within tolerance"
    # Re-average with the silent pods at their conservative value; if that flips the direction, hold.
    assumed = 0.0 if ratio > 1 else a.target
    conservative = (sum(reported) + missing * assumed) / (len(values) * a.target)
    if (ratio > 1) != (conservative > 1) or abs(conservative - 1) <= a.tolerance:
        return current, f"{what}: silent pods would reverse it, holding"
    return math.ceil(len(values) * conservative), what


def decide(
    a: Autoscaling, current: int, values: list[float | None], now: float, state: ScalerState
) -> Decision:
    raw, why = recommend(a, current, values)
    if raw is None:
        bounded = min(max(current, a.min_replicas), a.max_replicas)
        return Decision(bounded, f"{why}: holding {bounded}")
    state.since = now if state.since is None else state.since
    state.recommendations.append((now, raw))
    keep = max(a.scale_up.stabilization_window_seconds, a.scale_down.stabilization_window_seconds)
    state.recommendations = [(t, r) for t, r in state.recommendations if t >= now - keep]
    up = min(
        r for t, r in state.recommendations if t >= now - a.scale_up.stabilization_window_seconds
    )
    down = max(
        r for t, r in state.recommendations if t >= now - a.scale_down.stabilization_window_seconds
    )
    desired, notes = current, [f"recommends {raw}"]
    if up > current:
        desired = up
    elif down < current and now - state.since >= a.scale_down.stabilization_window_seconds:
        desired = down
    if desired != raw:
        notes.append(f"stabilized to {desired}")
    up_limit = current + a.scale_up.pods - _moved(state, now, a.scale_up.period_seconds, +1)
    down_limit = current - a.scale_down.pods + _moved(state, now, a.scale_down.period_seconds, -1)
    if desired > max(up_limit, current):
        desired = max(up_limit, current)
        notes.append(
            f"scale-up rate {a.scale_up.pods} pods/{a.scale_up.period_seconds}s caps it at {desired}"
        )
    elif desired < min(down_limit, current):
        desired = min(down_limit, current)
        notes.append(
            f"scale-down rate {a.scale_down.pods} pods/{a.scale_down.period_seconds}s caps it at {desired}"
        )
    bounded = min(max(desired, a.min_replicas), a.max_replicas)
    if bounded != desired:
        notes.append(f"bounded to [{a.min_replicas}, {a.max_replicas}]")
    return Decision(bounded, f"{why}: " + ", ".join(notes))


def record(state: ScalerState, now: float, change: int, longest_period: int) -> None:
    """Remember a change that was carried out, for the rate limits."""
    state.changes = [(t, c) for t, c in state.changes if t >= now - longest_period] + [
        (now, change)
    ]


def _moved(state: ScalerState, now: float, period: int, sign: int) -> int:
    """Pods already added (sign +1) or removed (sign -1) within the last `period` seconds."""
    return sum(abs(c) for t, c in state.changes if t > now - period and (c > 0) == (sign > 0) and c)
