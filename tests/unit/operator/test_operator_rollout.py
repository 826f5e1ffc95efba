"""The rollout gate's verdicts."""

from pagoda.operator.rollout import NewPod, Observation, judge
from pagoda.operator.spec import Analysis

BOUNDS = Analysis(
    max_error_rate=0.05, max_ttft_seconds_p95=2.0, window_seconds=120, min_requests=20
)


def pods(ready=2, age=60.0, restarts=0, n=2):
    return tuple(NewPod(f"p{i}", age, i < ready, restarts) for i in range(n))


def obs(ready=2, **over):
    base = {
        "desired": 2,
        "pods": pods(ready),
        "requests": 100,
        "errors": 0,
        "ttft_p95": 0.5,
        "covered_seconds": 120,
    }
    return Observation(**{**base, **over})


def test_healthy_pods_pass_after_the_window():
    v = judge(BOUNDS, 600, obs())
    assert (v.action, v.reason) == ("promote", "AnalysisPassed")


def test_waits_for_the_window_and_for_pods():
    assert judge(BOUNDS, 600, obs(covered_seconds=30)).action == "wait"
    assert judge(BOUNDS, 600, obs(ready=1)).reason == "Analyzing"
    assert judge(BOUNDS, 600, obs(ready=0, requests=0)).reason == "Starting"


def test_error_rate_rolls_back_at_once():
    v = judge(BOUNDS, 600, obs(errors=10, covered_seconds=20))
    assert (v.action, v.reason) == ("rollback", "ErrorRate")
    assert "10.0%" in v.message and "5.0%" in v.message


def test_ttft_rolls_back():
    v = judge(BOUNDS, 600, obs(ttft_p95=3.5))
    assert (v.action, v.reason) == ("rollback", "TTFT")


def test_bounds_need_min_requests():
    v = judge(BOUNDS, 600, obs(requests=5, errors=5, ttft_p95=9.0))
    assert (v.action, v.reason) == ("promote", "NotEnoughTraffic")
    assert judge(BOUNDS, 600, obs(requests=5, errors=5, covered_seconds=10)).action == "wait"


def test_startup_timeout_and_crashes():
    late = obs(pods=(NewPod("a", 400, True, 0), NewPod("b", 301, False, 0)))
    v = judge(BOUNDS, 300, late)
    assert v.reason == "StartupTimeout" and "new pod b" in v.message
    assert judge(None, 300, obs(pods=pods(ready=0, age=301))).action == "rollback"
    assert judge(BOUNDS, 300, obs(pods=pods(ready=1, age=299))).action == "wait"
    v = judge(None, 600, obs(pods=pods(restarts=2)))
    assert v.reason == "NewPodsCrashing" and "restarted 2 times" in v.message
    assert judge(None, 600, obs(pods=pods(restarts=1))).action == "promote"


def test_each_pod_is_timed_from_its_own_start():
    """maxSurge 1, 4 replicas, 250 s a model load: the rollout as a whole runs past the 300 s
    timeout, but no pod took longer than 250 s to become ready. (The fault: the timeout counted
    from the rollout's start for all pods, and rolled back a healthy rollout.)"""
    loading = (NewPod("a", 750, True, 0), NewPod("b", 500, True, 0), NewPod("c", 250, True, 0))
    o = obs(desired=4, pods=(*loading, NewPod("d", 20, False, 0)))
    assert judge(None, 300, o).action == "wait"


def test_restarts_are_counted_per_pod():
    """One restart in each of three pods is three node hiccups, not a crashing revision."""
    o = obs(desired=3, pods=tuple(NewPod(f"p{i}", 60, True, 1) for i in range(3)))
    assert judge(None, 600, o).action == "promote"


def test_without_analysis_ready_is_enough():
    assert judge(None, 600, obs(ready=1)).action == "wait"
    v = judge(None, 600, obs(requests=0, errors=0))
    assert (v.action, v.reason) == ("promote", "PodsReady")
