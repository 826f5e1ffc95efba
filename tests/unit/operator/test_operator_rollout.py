"""The rollout gate's verdicts."""

from pagoda.operator.rollout import Observation, judge
from pagoda.operator.spec import Analysis

BOUNDS = Analysis(
    max_error_rate=0.05, max_ttft_seconds_p95=2.0, window_seconds=120, min_requests=20
)


def obs(**over):
    base = dict(
        elapsed_seconds=60,
        desired=2,
        ready=2,
        restarts=0,
        requests=100,
        errors=0,
        ttft_p95=0.5,
        covered_seconds=120,
    )
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
    assert judge(BOUNDS, 300, obs(ready=1, elapsed_seconds=301)).reason == "StartupTimeout"
    assert judge(None, 300, obs(ready=0, elapsed_seconds=301)).action == "rollback"
    assert judge(BOUNDS, 300, obs(ready=1, elapsed_seconds=299)).action == "wait"
    assert judge(None, 600, obs(restarts=2)).reason == "NewPodsCrashing"
    assert judge(None, 600, obs(restarts=1)).action == "promote"


def test_without_analysis_ready_is_enough():
    assert judge(None, 600, obs(ready=1)).action == "wait"
    v = judge(None, 600, obs(requests=0, errors=0))
    assert (v.action, v.reason) == ("promote", "PodsReady")
