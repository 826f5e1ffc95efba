"""Per-InferenceService routing policies: which Ready pod takes a request.

- round-robin: in turn;
- least-load: the fewest requests in flight through this gateway plus those the engine reports
  waiting, KV cache usage breaking ties;
- prefix: consistent hashing with bounded load (requests in flight and waiting) over the prompt's
  leading characters (chwbl.py): prompts that share a system prompt meet the pod whose prefix
  cache holds it.
Each choice returns a decision label for the metrics (the prefix-affinity share is
`affinity / (affinity + spill)`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from pagoda.gateway.chwbl import Ring, bounded_choice
from pagoda.gateway.registry import Endpoint

# A waiting request on the engine counts like one in flight here; a full KV cache adds one more.
KV_WEIGHT = 1.0


def requests(e: Endpoint) -> float:
    """Requests on the pod: in flight through this gateway, plus those the engine reports waiting."""
    return e.in_flight + e.waiting


def load(e: Endpoint) -> float:
    return requests(e) + KV_WEIGHT * e.kv_usage


@dataclass
class Router:
    """One per InferenceService: the round-robin cursor and the hash ring live across requests."""

    epsilon: float = 0.25  # bounded-load slack of the prefix policy
    _turn: itertools.count[int] = field(default_factory=itertools.count)
    _ring: Ring | None = None

    def choose(
        self, policy: str, endpoints: list[Endpoint], prefix_key: str | None
    ) -> tuple[Endpoint, str]:
        """(endpoint, decision); `endpoints` is non-empty."""
        if policy == "least-load":
            i = next(self._turn)  # rotate the start so ties spread instead of piling on the first
            rotated = endpoints[i % len(endpoints) :] + endpoints[: i % len(endpoints)]
            return min(rotated, key=load), "least-load"
        if policy == "prefix" and prefix_key:
            by_name = {e.pod: e for e in endpoints}
            if self._ring is None or self._ring.names != frozenset(by_name):
                self._ring = Ring(list(by_name))
            # The bound counts requests, as CHWBL does: a fraction of KV usage (scraped up to a
            # few seconds ago, cached blocks and all) under a bound rounded up to whole requests
            # would send an idle pod's tenants elsewhere, away from their cached prefixes.
            chosen, first = bounded_choice(self._ring, prefix_key, by_name, requests, self.epsilon)
            return chosen, "affinity" if first else "spill"
        return endpoints[next(self._turn) % len(endpoints)], "round-robin"
