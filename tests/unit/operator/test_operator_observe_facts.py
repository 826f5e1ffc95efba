"""observe.py reads pods and Deployments from kopf's indexes: the trimmed copies it keeps there
must answer every question the full objects would."""

from pagoda.operator.observe import _new_pod, deployment_facts, is_ready, pod_facts

POD = {
    "metadata": {
        "name": "m-abc",
        "labels": {"pagoda.dev/revision": "r1", "app.kubernetes.io/name": "pagoda-engine"},
        "creationTimestamp": "2026-12-03T08:00:00Z",
        "managedFields": [{"manager": "kube-controller-manager"}],
    },
    "spec": {"containers": [{"name": "engine", "image": "e:1"}]},
    "status": {
        "podIP": "10.0.0.7",
        "startTime": "2026-12-03T08:01:00Z",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
        "containerStatuses": [{"name": "engine", "restartCount": 1, "image": "e:1"}],
    },
}


def test_pod_facts_answer_as_the_pod_does():
    facts = pod_facts(POD)
    assert is_ready(facts) and is_ready(POD)
    now = 1796284800.0 + 600  # 10 min after creation, 9 after the start
    assert _new_pod(facts, now) == _new_pod(POD, now)
    assert _new_pod(facts, now).age_seconds == 540 and _new_pod(facts, now).restarts == 1
    assert "spec" not in facts and "managedFields" not in facts["metadata"]


def test_a_pod_not_started_is_timed_from_its_creation():
    pending = {"metadata": POD["metadata"], "status": {"phase": "Pending"}}
    facts = pod_facts(pending)
    assert not is_ready(facts) and _new_pod(facts, 1796284800.0 + 60).age_seconds == 60


def test_deployment_facts():
    d = {
        "metadata": {"name": "m"},
        "spec": {"replicas": 3, "template": {}},
        "status": {"readyReplicas": 2},
    }
    assert deployment_facts(d) == {"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}
