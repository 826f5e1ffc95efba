"""Status conditions from facts."""

from pagoda.operator.status import Facts, conditions, merge


def by_type(conds):
    return {c["type"]: c for c in conds}


def test_serving_and_stable():
    c = by_type(conditions(Facts(desired=2, replicas=2, ready=2, updated=2, pods_scraped=2)))
    assert c["Ready"]["status"] == "True" and c["Ready"]["reason"] == "Serving"
    assert c["Progressing"]["status"] == "False"
    assert c["Degraded"]["status"] == "False"
    assert c["MetricsAvailable"]["status"] == "True" and "2/2" in c["MetricsAvailable"]["message"]


def test_pending_pods():
    c = by_type(conditions(Facts(desired=1, replicas=1, ready=0, updated=1)))
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ("False", "NoReadyPods")
    assert (c["Progressing"]["status"], c["Progressing"]["reason"]) == ("True", "Scaling")
    assert c["MetricsAvailable"]["reason"] == "NotScrapedYet"
    c = by_type(conditions(Facts(desired=1, replicas=1, ready=0, updated=1, pods_scraped=0)))
    assert c["MetricsAvailable"]["reason"] == "NoReadyPods"
    c = by_type(conditions(Facts(desired=0, replicas=0, ready=0, updated=0)))
    assert c["Ready"]["reason"] == "ScaledToZero"


def test_degraded_reasons():
    rolled = by_type(
        conditions(Facts(2, 2, 2, 2, rollout_phase="RolledBack", rollout_message="ErrorRate: 9%"))
    )
    assert (rolled["Degraded"]["status"], rolled["Degraded"]["reason"]) == ("True", "RolledBack")
    assert "9%" in rolled["Degraded"]["message"]
    stuck = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "too slow",
        }
    ]
    c = by_type(conditions(Facts(2, 3, 2, 1, deployment_conditions=stuck)))
    assert c["Degraded"]["reason"] == "ProgressDeadlineExceeded"
    quota = [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}]
    assert (
        by_type(conditions(Facts(2, 1, 1, 1, deployment_conditions=quota)))["Degraded"]["reason"]
        == "ReplicaFailure"
    )
    failed = by_type(conditions(Facts(1, 1, 1, 1, apply_error="422 Invalid")))
    assert failed["Ready"]["reason"] == failed["Degraded"]["reason"] == "ApplyFailed"
    scraped_none = by_type(conditions(Facts(2, 2, 2, 2, pods_scraped=0)))
    assert scraped_none["MetricsAvailable"]["reason"] == "ScrapeFailed"


def test_rollout_in_progress():
    c = by_type(
        conditions(Facts(2, 3, 2, 1, rollout_phase="Progressing", rollout_message="analyzing"))
    )
    assert (
        c["Progressing"]["status"],
        c["Progressing"]["reason"],
        c["Progressing"]["message"],
    ) == ("True", "RollingOut", "analyzing")


def test_merge_keeps_transition_time_while_status_holds():
    first = merge([], conditions(Facts(1, 1, 0, 1)), "2026-01-01T00:00:00Z", 1)
    second = merge(first, conditions(Facts(1, 1, 0, 1)), "2026-01-01T00:05:00Z", 2)
    third = merge(second, conditions(Facts(1, 1, 1, 1)), "2026-01-01T00:09:00Z", 2)
    assert by_type(second)["Ready"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert by_type(second)["Ready"]["observedGeneration"] == 2
    assert by_type(third)["Ready"]["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert by_type(third)["Degraded"]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
