"""autoscaling.minReplicas 0: idle -> zero after the window, a wake request -> one replica."""

from __future__ import annotations

from pagoda.operator.metrics_scrape import Sample
from pagoda.operator.scale_to_zero import IdleState, decide, observe, wake_time
from pagoda.operator.spec import Autoscaling

A = Autoscaling("Operator", 0, 3, "WaitingRequests", 1.0, scale_to_zero_after_seconds=600)


def quiet(finished: float = 0) -> Sample:
    return Sample(time=0, finished={"stop": finished})


def test_idle_for_the_window_goes_to_zero_and_busy_does_not():
    st = IdleState()
    observe(st, {"p": quiet()}, None, now=0)
    assert decide(A, 2, st, None, now=0) is None  # the ordinary autoscaler decides
    observe(st, {"p": quiet()}, None, now=599)
    assert decide(A, 2, st, None, now=599) is None
    observe(st, {"p": quiet()}, None, now=600)
    move = decide(A, 2, st, None, now=600)
    assert (move.replicas, move.reason) == (0, "ScaledToZero")


def test_a_request_running_or_finished_between_scrapes_is_activity():
    st = IdleState()
    observe(st, {"p": quiet(5)}, None, now=0)
    observe(st, {"p": Sample(time=0, running=1)}, None, now=500)
    observe(st, {"p": quiet(5)}, None, now=900)
    assert decide(A, 1, st, None, now=900) is None  # active at 500
    observe(st, {"p": quiet(6)}, None, now=1050)  # one finished since the last scrape
    assert decide(A, 1, st, None, now=1100 + 500) is None


def test_at_zero_only_a_newer_wake_request_brings_a_replica():
    st = IdleState()
    observe(st, {}, None, now=0)
    decide(A, 1, st, None, now=700)  # goes to sleep at 700
    assert st.slept_at == 700
    assert decide(A, 0, st, wake_at=650, now=800).replicas == 0  # an old request: stay
    move = decide(A, 0, st, wake_at=790, now=800)
    assert (move.replicas, move.reason) == (1, "ScaledFromZero")
    observe(st, {}, 790, now=801)
    assert decide(A, 1, st, 790, now=900) is None  # and it is not put back to sleep at once


def test_a_fresh_operator_at_zero_honours_a_recent_wake_request_only():
    assert decide(A, 0, IdleState(), wake_at=1000, now=1010).replicas == 1
    assert decide(A, 0, IdleState(), wake_at=100, now=1010).replicas == 0


def test_wake_time_reads_the_gateways_annotation():
    body = {
        "metadata": {"annotations": {"gateway.pagoda.dev/wake-requested": "2026-12-03T07:00:00Z"}}
    }
    assert wake_time(body) == 1796281200.0
    assert (
        wake_time({"metadata": {"annotations": {"gateway.pagoda.dev/wake-requested": "soon"}}})
        is None
    )
    assert wake_time({"metadata": {}}) is None
