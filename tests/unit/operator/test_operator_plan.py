"""plan.py: the rollout's steps and the status, as pure functions of spec and observation.

Each fault test names the fault it reproduces; they failed on the code before plan.py."""

import json

from pagoda.operator.config import OperatorConfig
from pagoda.operator.plan import (
    Observed,
    apply_error_of,
    gate,
    plan,
    revision_of,
    status,
    status_patch,
)
from pagoda.operator.rollout import Verdict
from pagoda.operator.spec import parse

V1 = OperatorConfig(engine_image="e:1-cuda", engine_cpu_image="e:1", observe_interval=10)
V2 = OperatorConfig(engine_image="e:2-cuda", engine_cpu_image="e:2", observe_interval=10)
NOW = "2026-12-03T08:00:00Z"
PROMOTE = Verdict("promote", "PodsReady", "1/1 new pods ready")
BROKEN = Verdict("rollback", "ErrorRate", "new pods' error rate 50%")


def spec(seqs=8, **over):
    return parse("m", "ns", {"model": {"uri": "default"}, "engine": {"maxNumSeqs": seqs}, **over})


def image_of(p):
    deploy = next(o for o in p.objects if o["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]["image"]


def stable(s, config, generation=1):
    """The rollout once `s` was created and its first revision promoted."""
    p = plan(s, Observed(generation, {}, None, False), config, NOW)
    assert p.rollout["phase"] == "Progressing" and [e.reason for e in p.events] == [
        "RolloutStarted"
    ]
    step = gate(s, generation, p.rollout, PROMOTE, config)
    assert (
        step.rollout["phase"] == "Succeeded"
        and step.rollout["stableImage"] == config.engine_cpu_image
    )
    return step.rollout


def test_an_operator_upgrade_rolls_nothing_until_the_spec_changes():
    """Fault: the operator's default image was part of every revision, so upgrading the operator
    rolled every InferenceService at once."""
    a = spec()
    rollout = stable(a, V1)
    p = plan(a, Observed(1, {"rollout": rollout}, None, False), V2, NOW)
    assert image_of(p) == "e:1" and p.rollout == rollout and p.events == []
    p = plan(spec(4), Observed(2, {"rollout": rollout}, None, False), V2, NOW)
    assert image_of(p) == "e:2" and p.rollout["phase"] == "Progressing"
    # Scaling is no change of the pods: the image stays pinned.
    p = plan(spec(replicas=3), Observed(3, {"rollout": rollout}, None, False), V2, NOW)
    assert image_of(p) == "e:1" and p.events == []


def test_a_rollback_restores_the_stable_image():
    """Fault: a rollback rendered the stable spec with the operator's current image, a revision
    that was not the stable one; it rolled out again, failed again, every tick."""
    a, b = spec(), spec(4)
    rollout = stable(a, V1)
    p = plan(b, Observed(2, {"rollout": rollout}, None, False), V2, NOW)
    bad = p.rollout
    step = gate(b, 2, bad, BROKEN, V2)
    assert step.rolled_back and step.event.reason == "RolledBack"
    back = step.rollout
    assert back["revision"] == rollout["stableRevision"] == revision_of(a, "e:1")
    assert back["failedRevision"] == bad["revision"] and back["image"] == "e:1"
    p = plan(b, Observed(2, {"rollout": back}, None, False), V2, NOW)
    assert image_of(p) == "e:1" and p.events == [] and p.rollout == back


def test_a_rollback_to_the_same_pods_fails_once():
    """A stable revision recorded before images were pinned renders, with the new default image,
    the very revision that fails: rolling back cannot help. The rollout stops as Failed with one
    Event, and later plans start nothing."""
    a = spec()
    legacy = {
        "phase": "Succeeded",
        "revision": revision_of(a, "e:1"),
        "stableRevision": revision_of(a, "e:1"),
        "stableSpec": json.dumps(a.raw, sort_keys=True),
    }
    p = plan(a, Observed(1, {"rollout": legacy}, None, False), V2, NOW)
    assert p.rollout["phase"] == "Progressing" and image_of(p) == "e:2"
    step = gate(a, 1, p.rollout, BROKEN, V2)
    assert not step.rolled_back and step.rollout["phase"] == "Failed"
    assert (
        step.event.reason == "RolloutFailed" and "renders the same pods" in step.rollout["message"]
    )
    again = plan(a, Observed(1, {"rollout": step.rollout}, None, False), V2, NOW)
    assert again.events == [] and again.rollout == step.rollout


def test_a_failed_spec_can_be_asked_for_again():
    """Fault: failedRevision was never cleared, so returning to that spec (after fixing what broke
    it outside the spec) was silently ignored: the pods stayed on the stable spec."""
    a, b = spec(), spec(4)
    rollout = stable(a, V1)
    bad = plan(b, Observed(2, {"rollout": rollout}, None, False), V1, NOW).rollout
    back = gate(b, 2, bad, BROKEN, V1).rollout
    assert plan(b, Observed(2, {"rollout": back}, None, False), V1, NOW).rollout == back
    home = plan(a, Observed(3, {"rollout": back}, None, False), V1, NOW)
    assert home.rollout["phase"] == "Succeeded" and "failedRevision" not in home.rollout
    retry = plan(b, Observed(4, {"rollout": home.rollout}, None, False), V1, NOW)
    assert retry.rollout["phase"] == "Progressing" and retry.rollout["revision"] == bad["revision"]
    assert [e.reason for e in retry.events] == ["RolloutStarted"]
    # Asked for again straight away (the generation moved on): tried again too.
    retry = plan(b, Observed(3, {"rollout": back}, None, False), V1, NOW)
    assert retry.rollout["revision"] == bad["revision"] and "failedGeneration" not in retry.rollout


def test_promotion_clears_the_failure():
    a = spec()
    rollout = {**stable(a, V1), "failedRevision": "x", "failedGeneration": 0}
    c = spec(6)
    p = plan(c, Observed(5, {"rollout": rollout}, None, False), V1, NOW)
    step = gate(c, 5, p.rollout, PROMOTE, V1)
    assert (
        "failedRevision" not in step.rollout
        and step.rollout["stableRevision"] == p.rollout["revision"]
    )


def test_the_gate_leaves_a_revision_the_spec_moved_past():
    a, b = spec(), spec(4)
    rollout = stable(a, V1)
    bad = plan(b, Observed(2, {"rollout": rollout}, None, False), V1, NOW).rollout
    # Generation 3 asks for other pods; its reconcile has not run yet.
    for verdict in (PROMOTE, BROKEN):
        step = gate(spec(5), 3, bad, verdict, V1)
        assert step.rollout == bad and step.event is None and not step.rolled_back


DEPLOY = {
    "spec": {"replicas": 1},
    "status": {"replicas": 1, "readyReplicas": 1, "updatedReplicas": 1},
}


def test_an_observation_neither_stamps_the_generation_nor_clears_an_apply_failure():
    """Fault: the observe timer rewrote the status every tick with the object's generation and
    fresh conditions: Degraded=ApplyFailed vanished and observedGeneration claimed a spec that
    never applied."""
    s = spec()
    ok = status(s, {}, DEPLOY, {}, 1, NOW)
    assert ok["observedGeneration"] == 1
    failed = status(s, ok, DEPLOY, {}, None, NOW, apply_error="applying children failed: 422")
    assert failed["observedGeneration"] == 1  # generation 2 failed to apply
    looked = status(
        s, failed, DEPLOY, {}, None, NOW, apply_error_of(failed), metrics={"podsScraped": 1}
    )
    degraded = next(c for c in looked["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ApplyFailed" and looked["observedGeneration"] == 1
    healed = status(s, looked, DEPLOY, {}, 2, NOW)
    assert apply_error_of(healed) is None and healed["observedGeneration"] == 2


def test_a_steady_state_writes_no_status():
    """Fault: every tick sent a status patch (6 writes a minute an object) that changed nothing."""
    s = spec()
    first = status(s, {}, DEPLOY, {"phase": "Succeeded"}, 1, NOW, metrics={"podsScraped": 1})
    later = status(
        s,
        first,
        DEPLOY,
        {"phase": "Succeeded"},
        None,
        "2026-12-03T09:00:00Z",
        metrics={"podsScraped": 1},
    )
    assert status_patch(first, later) == {}
    scaled = {**DEPLOY, "status": {**DEPLOY["status"], "readyReplicas": 0}}
    patch = status_patch(first, status(s, first, scaled, {"phase": "Succeeded"}, None, NOW))
    assert patch["readyReplicas"] == 0 and "url" not in patch
    assert status(s, {}, DEPLOY, {}, None, NOW).get("observedGeneration") is None


def test_a_cleared_failure_is_removed_from_the_stored_status():
    """A merge patch keeps keys it does not name: a cleared failedRevision must be sent as null."""
    old = {"rollout": {"phase": "RolledBack", "failedRevision": "r2", "failedGeneration": 2}}
    new = {"rollout": {"phase": "Succeeded"}}
    assert status_patch(old, new) == {
        "rollout": {"phase": "Succeeded", "failedRevision": None, "failedGeneration": None}
    }
    assert status_patch({"metrics": {"a": 1}, "url": "u"}, {"url": "u"}) == {}
