"""The autoscaler's decision over recorded metric series: bursts, noise, missing pods, metrics that stop."""

import random

from pagoda.operator.autoscale import ScalerState, decide, recommend, record
from pagoda.operator.spec import Autoscaling, ScaleRule

STEP = 10  # seconds between scrapes, as the operator's observe timer


def policy(**over):
    base = dict(
        mode="Operator",
        min_replicas=1,
        max_replicas=10,
        metric="WaitingRequests",
        target=4.0,
        tolerance=0.1,
        scale_up=ScaleRule(0, 4, 60),
        scale_down=ScaleRule(300, 1, 60),
    )
    return Autoscaling(**{**base, **over})


def run(a, series, start=1):
    """Feed per-scrape total load (split evenly over the pods, or a callable of the replica count);
    returns the replica count after each decision."""
    state, current, out = ScalerState(), start, []
    for i, load in enumerate(series):
        now = i * STEP
        values = load(current) if callable(load) else [load / current] * current
        d = decide(a, current, values, now, state)
        if d.replicas != current:
            record(state, now, d.replicas - current, 60)
        current = d.replicas
        out.append(current)
    return out


def test_steady_load_scales_to_load_over_target():
    # 20 waiting requests in total, 4 per pod wanted: 5 pods, reached within one up-period (4 pods/60 s).
    out = run(policy(), [20.0] * 12)
    assert out[0] == 5 and out[-1] == 5


def test_scale_up_rate_limit():
    out = run(policy(scale_up=ScaleRule(0, 2, 60)), [40.0] * 30)
    assert out[0] == 3  # 1 + 2
    assert out[5] == 3  # no more within the same 60 s
    assert out[6] == 5  # the period has passed
    assert out[12] == 7
    assert out[-1] == 10  # 40 waiting / 4 per pod, reached at last


def test_burst_shorter_than_up_window_does_nothing():
    a = policy(scale_up=ScaleRule(30, 4, 60))
    series = [4.0] * 5 + [40.0, 40.0] + [4.0] * 5  # a 20 s spike, window 30 s
    assert set(run(a, series)) == {1}


def test_sustained_load_passes_the_up_window():
    a = policy(scale_up=ScaleRule(30, 4, 60))
    out = run(a, [4.0] * 3 + [16.0] * 8)
    assert out[3] == 1 and out[5] == 1  # recommendations in the window still include the calm ones
    assert out[6] == 4


def test_scale_down_waits_for_the_down_window_and_steps_one_by_one():
    a = policy()
    out = run(a, [20.0] * 3 + [0.0] * 60, start=5)
    calm = out[3:]
    assert calm[:30] == [5] * 30  # 300 s of stabilization: nothing
    assert calm[30] == 4
    assert calm[31:36] == [4] * 5  # one pod per 60 s
    assert calm[36] == 3
    assert out[-1] >= 1 and min(out) == 1


def test_noise_within_tolerance_holds():
    rng = random.Random(0)
    series = [12.0 * (1 + rng.uniform(-0.09, 0.09)) for _ in range(60)]  # 3 pods at target, +-9%
    assert set(run(policy(), series, start=3)) == {3}


def test_noisy_load_does_not_flap():
    rng = random.Random(1)
    series = [12.0 * (1 + rng.uniform(-0.4, 0.4)) for _ in range(90)]
    out = run(policy(), series, start=3)
    changes = sum(1 for x, y in zip(out, out[1:]) if x != y)
    downs = sum(1 for x, y in zip(out, out[1:]) if y < x)
    assert downs == 0  # the down-window's max keeps the peak
    assert changes <= 3


def test_missing_pods_count_as_zero_when_scaling_up():
    # Two of four pods are still loading their model; the two that report are busy.
    a = policy()
    raw, why = recommend(a, 4, [8.0, 8.0, None, None])
    assert raw == 4 and "silent pods" in why  # 16 in total over 4 pods = on target: hold, not 8
    raw, _ = recommend(a, 4, [20.0, 20.0, None, None])
    assert raw == 10  # 40 waiting / 4 per pod


def test_missing_pods_count_as_on_target_when_scaling_down():
    a = policy()
    raw, _ = recommend(a, 4, [0.0, None, None, None])
    assert raw == 3  # (0 + 3 * 4) / (4 * 4) = 0.75 -> 3, not 1
    raw, _ = recommend(a, 2, [3.9, None])
    assert raw == 2


def test_metrics_that_stop_hold_the_count():
    a = policy()
    state = ScalerState()
    assert decide(a, 5, [10.0] * 5, 0, state).replicas == 9  # wants 13; 4 pods per minute
    d = decide(a, 6, [None] * 6, 10, state)
    assert d.replicas == 6 and "no pod reported" in d.reason
    d = decide(a, 6, [], 20, state)
    assert d.replicas == 6


def test_metrics_that_stop_still_respect_bounds():
    d = decide(policy(min_replicas=2, max_replicas=4), 7, [], 0, ScalerState())
    assert d.replicas == 4 and "holding 4" in d.reason


def test_min_and_max():
    assert run(policy(max_replicas=3), [100.0] * 3)[-1] == 3
    assert run(policy(min_replicas=2), [0.0] * 3, start=2) == [2, 2, 2]
    assert run(policy(min_replicas=3), [0.0], start=1) == [3]


def test_kv_cache_usage_mean():
    a = policy(metric="KVCacheUsage", target=0.5)
    raw, _ = recommend(a, 2, [0.9, 0.7])
    assert raw == 4  # mean 0.8 / 0.5 * 2 = 3.2 -> 4


def test_ttft_p95():
    a = policy(metric="TTFTSecondsP95", target=1.0)
    assert recommend(a, 2, [3.0])[0] == 6
    assert recommend(a, 2, [1.05])[0] == 2  # within tolerance
    assert (
        recommend(a, 4, [None])[0] == 0
    )  # no first tokens in the window: no traffic (min bounds it)
    assert recommend(a, 4, [])[0] is None  # no pod reported: hold


def test_direction_and_reason():
    d = decide(policy(scale_up=ScaleRule(0, 1, 60)), 1, [20.0], 0, ScalerState())
    assert d.replicas == 2 and d.direction(1) == "up" and d.direction(2) is None
    assert "WaitingRequests" in d.reason and "scale-up rate" in d.reason


def test_a_fresh_memory_waits_a_whole_down_window():
    # An operator restarted into a quiet period: no history says the quiet has lasted, so wait.
    out = run(policy(), [0.0] * 40, start=5)
    assert out[:30] == [5] * 30 and out[30] == 4
    assert run(policy(), [40.0], start=5) == [9]  # scaling up needs no history
