"""The registry built from InferenceService and EndpointSlice objects as the apiserver sends them."""

from __future__ import annotations

from pagoda.gateway.registry import Registry


def isvc(name: str, ns: str = "ns", served: str | None = None, **spec) -> dict:
    model = {"uri": "default"} | ({"servedName": served} if served else {})
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": spec.pop("created", "")},
        "spec": {"model": model} | spec,
    }


def endpoint_slice(service: str, name: str, *eps: tuple[str, bool | None], ns: str = "ns") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "ports": [{"name": "http", "port": 8000}],
        "endpoints": [
            {
                "addresses": [ip],
                "targetRef": {"kind": "Pod", "name": f"pod-{ip}"},
                **({} if ready is None else {"conditions": {"ready": ready}}),
            }
            for ip, ready in eps
        ],
    }


def test_model_names_policies_and_scale_to_zero():
    r = Registry()
    r.upsert_isvc(isvc("a"))
    r.upsert_isvc(isvc("b", served="org/model-b", routing="prefix", autoscaling={"minReplicas": 0}))
    assert r.lookup("a").routing == "round-robin" and not r.lookup("a").scales_to_zero
    b = r.lookup("org/model-b")
    assert (b.name, b.routing, b.scales_to_zero) == ("b", "prefix", True)
    assert r.lookup("b") is None
    assert [x.model for x in r.backends()] == ["a", "org/model-b"]


def test_only_ready_endpoints_count_and_a_missing_condition_means_ready():
    r = Registry()
    r.upsert_isvc(isvc("a"))
    r.upsert_slice(
        endpoint_slice("a", "a-1", ("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None))
    )
    b = r.lookup("a")
    assert [e.pod for e in b.endpoints] == ["pod-10.0.0.1", "pod-10.0.0.3"]
    assert b.endpoints[0].url == "http://10.0.0.1:8000" and b.ready.is_set()
    r.delete_slice(endpoint_slice("a", "a-1"))
    assert b.endpoints == [] and not b.ready.is_set()


def test_a_surviving_pod_keeps_its_in_flight_count():
    r = Registry()
    r.upsert_isvc(isvc("a"))
    r.upsert_slice(endpoint_slice("a", "a-1", ("10.0.0.1", True)))
    r.lookup("a").endpoints[0].in_flight = 3
    r.upsert_slice(endpoint_slice("a", "a-1", ("10.0.0.1", True), ("10.0.0.2", True)))
    assert [e.in_flight for e in r.lookup("a").endpoints] == [3, 0]


def test_a_slice_before_its_inferenceservice_is_kept():
    r = Registry()
    r.upsert_slice(endpoint_slice("a", "a-1", ("10.0.0.1", True)))
    r.upsert_isvc(isvc("a"))
    assert len(r.lookup("a").endpoints) == 1


def test_a_relist_drops_what_was_deleted_in_its_namespace_only():
    r = Registry()
    r.upsert_isvc(isvc("a", ns="one"))
    r.upsert_isvc(isvc("b", ns="two"))
    r.upsert_slice(endpoint_slice("b", "b-1", ("10.0.0.1", True), ns="two"))
    r.reset_isvcs([], "one")
    assert r.lookup("a") is None and r.lookup("b") is not None
    r.reset_slices([], "two")
    assert r.lookup("b").endpoints == []


def test_the_older_inferenceservice_keeps_a_contested_name():
    r = Registry()
    r.upsert_isvc(isvc("new", ns="x", served="m", created="2026-02-01T00:00:00Z"))
    r.upsert_isvc(isvc("old", ns="y", served="m", created="2026-01-01T00:00:00Z"))
    assert r.lookup("m").name == "old"
