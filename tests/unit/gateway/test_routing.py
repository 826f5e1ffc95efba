"""The three routing policies over plain Endpoints."""

from __future__ import annotations

from collections import Counter

from pagoda.gateway.registry import Endpoint
from pagoda.gateway.routing import Router


def pods(n: int) -> list[Endpoint]:
    return [Endpoint(f"pod-{i}", f"10.0.0.{i}", 8000) for i in range(n)]


def test_round_robin_takes_turns():
    eps, r = pods(3), Router()
    chosen = [r.choose("round-robin", eps, None)[0].pod for _ in range(6)]
    assert chosen == ["pod-0", "pod-1", "pod-2"] * 2


def test_least_load_counts_in_flight_waiting_and_kv():
    eps, r = pods(3), Router()
    eps[0].in_flight, eps[1].waiting, eps[2].kv_usage = 3, 1, 0.5
    e, decision = r.choose("least-load", eps, None)
    assert (e.pod, decision) == ("pod-2", "least-load")


def test_least_load_spreads_ties():
    eps, r = pods(3), Router()
    assert len({r.choose("least-load", eps, None)[0].pod for _ in range(3)}) == 3


def test_prefix_keeps_a_tenant_on_one_pod_while_others_spread():
    eps, r = pods(2), Router()
    homes = {}
    for tenant in range(8):
        chosen = {r.choose("prefix", eps, f"system prompt {tenant}")[0].pod for _ in range(5)}
        assert len(chosen) == 1  # nothing in flight: always the key's own pod
        homes[tenant] = chosen.pop()
    assert set(homes.values()) == {"pod-0", "pod-1"}


def test_prefix_spills_when_its_pod_is_overloaded_and_says_so():
    eps, r = pods(2), Router()
    home, decision = r.choose("prefix", eps, "tenant A")
    assert decision == "affinity"
    home.in_flight = 10
    other, decision = r.choose("prefix", eps, "tenant A")
    assert other is not home and decision == "spill"


def test_prefix_stays_home_whatever_the_kv_usage_of_an_idle_pod():
    # A scrape taken while the tenant's last request ran, or cached blocks, show as KV usage.
    eps, r = pods(2), Router()
    home, _ = r.choose("prefix", eps, "tenant A")
    home.kv_usage = 0.3
    again, decision = r.choose("prefix", eps, "tenant A")
    assert again is home and decision == "affinity"


def test_prefix_without_a_key_falls_back_to_round_robin():
    eps, r = pods(2), Router()
    decisions = Counter(r.choose("prefix", eps, None)[1] for _ in range(4))
    assert decisions == {"round-robin": 4}


def test_the_ring_follows_membership():
    r = Router()
    a, _ = r.choose("prefix", pods(2), "k")
    b, _ = r.choose("prefix", pods(3), "k")
    assert b.pod in {"pod-0", "pod-1", "pod-2"}
    assert a.pod in {"pod-0", "pod-1"}
