"""What is wrong with the pods, read from their status as the kubelet and scheduler write it; and
the trimmed copies in kopf's index (observe.pod_facts) still say it."""

from pagoda.operator.observe import pod_facts
from pagoda.operator.plan import status, trouble_of
from pagoda.operator.spec import parse
from pagoda.operator.trouble import Trouble, trouble


def pod(name="m-1", init=(), containers=(), conditions=()):
    return {
        "metadata": {"name": name, "labels": {}, "creationTimestamp": "2026-12-03T08:00:00Z"},
        "status": {
            "conditions": list(conditions),
            "initContainerStatuses": list(init),
            "containerStatuses": list(containers),
        },
    }


DOWNLOAD_FAILED = {
    "name": "model-download",
    "restartCount": 3,
    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
    "lastState": {
        "terminated": {
            "exitCode": 1,
            "reason": "Error",
            "message": "huggingface_hub.errors.GatedRepoError: 401 Client Error. Access to model "
            "meta-llama/Llama-3.1-8B is restricted.",
        }
    },
}


def test_a_failed_download_shows_with_its_reason():
    t = trouble([pod(init=[DOWNLOAD_FAILED])])
    assert t.reason == "ModelDownloadFailed"
    assert t.message.startswith("pod m-1: container model-download exited 1: ")
    assert "GatedRepoError: 401" in t.message
    assert trouble([pod_facts(pod(init=[DOWNLOAD_FAILED]))]) == t


def test_missing_secret_pvc_and_image():
    missing_secret = {
        "name": "engine",
        "state": {
            "waiting": {
                "reason": "CreateContainerConfigError",
                "message": 'secret "keys" not found',
            }
        },
    }
    t = trouble([pod(containers=[missing_secret])])
    assert t == Trouble(
        "ContainerConfigError", 'pod m-1: container engine: secret "keys" not found'
    )
    pvc = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": '0/3 nodes are available: persistentvolumeclaim "cache" not found.',
    }
    assert trouble([pod_facts(pod(conditions=[pvc]))]).reason == "MissingVolume"
    pull = {
        "name": "engine",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "401"}},
    }
    assert trouble([pod(containers=[pull])]).reason == "ImagePullFailed"


def test_what_is_not_trouble():
    no_node = {"type": "PodScheduled", "status": "False", "message": "0/0 nodes are available"}
    starting = {"name": "engine", "state": {"waiting": {"reason": "ContainerCreating"}}}
    stopped_clean = {"name": "engine", "state": {"terminated": {"exitCode": 0}}}
    assert trouble([pod(conditions=[no_node], containers=[starting, stopped_clean])]) is None
    assert trouble([]) is None


def test_engine_crash_and_the_first_pod_by_name():
    crash = {
        "name": "engine",
        "restartCount": 2,
        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
        "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
    }
    t = trouble([pod("m-2", containers=[crash]), pod("m-1", init=[DOWNLOAD_FAILED])])
    assert t.reason == "ModelDownloadFailed"
    t = trouble([pod("m-2", containers=[crash])])
    assert t == Trouble("EngineCrashing", "pod m-2: container engine exited 137: OOMKilled")


def test_the_status_carries_the_trouble_until_the_next_look():
    s = parse("m", "ns", {"model": {"uri": "default"}})
    t = trouble([pod(init=[DOWNLOAD_FAILED])])
    seen = status(s, {}, None, {}, 1, "2026-12-03T08:00:00Z", trouble=t)
    degraded = next(c for c in seen["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelDownloadFailed")
    assert trouble_of(seen) == t
    healed = status(s, seen, None, {}, 1, "2026-12-03T08:01:00Z")
    assert trouble_of(healed) is None
