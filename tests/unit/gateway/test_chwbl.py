"""Consistent hashing with bounded loads: stable, spread, bounded, and minimal movement."""

from __future__ import annotations

from collections import Counter

from pagoda.gateway.chwbl import Ring, bounded_choice

PODS = [f"pod-{i}" for i in range(4)]


def test_a_key_always_walks_from_the_same_pod():
    ring = Ring(PODS)
    assert ring.walk("system prompt A")[0] == Ring(PODS).walk("system prompt A")[0]
    assert sorted(ring.walk("x")) == sorted(PODS)  # every pod once


def test_keys_spread_over_pods():
    ring = Ring(PODS)
    firsts = Counter(ring.walk(f"tenant {i}")[0] for i in range(2000))
    assert set(firsts) == set(PODS)
    assert min(firsts.values()) > 2000 / len(PODS) * 0.6


def test_removing_a_pod_moves_only_its_keys():
    before, after = Ring(PODS), Ring(PODS[:-1])
    keys = [f"k{i}" for i in range(1000)]
    moved = [k for k in keys if before.walk(k)[0] != after.walk(k)[0]]
    assert all(before.walk(k)[0] == PODS[-1] for k in moved)


def test_the_bound_spills_to_the_next_pod_on_the_ring():
    ring = Ring(PODS)
    loads = {p: 0 for p in PODS}
    home = ring.walk("hot")[0]
    loads[home] = 10  # far over the mean
    chosen, first = bounded_choice(ring, "hot", loads, lambda n: n, 0.25)
    assert not first and chosen == 0  # the load of the next pod on the walk
    chosen, first = bounded_choice(ring, "hot", {p: 0 for p in PODS}, lambda n: n, 0.25)
    assert first


def test_no_pod_goes_over_the_bound_under_one_hot_key():
    ring = Ring(PODS)
    loads = {p: 0 for p in PODS}
    for _ in range(40):  # 40 requests of one key, none finishing
        items = {p: [p, loads[p]] for p in PODS}
        chosen, _ = bounded_choice(ring, "hot", items, lambda v: v[1], 0.25)
        loads[chosen[0]] += 1
    assert max(loads.values()) <= 13  # ceil(40 / 4 * 1.25) = 13
