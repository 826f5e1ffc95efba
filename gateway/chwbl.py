"""Consistent hashing with bounded loads (Mirrokni et al.; KubeAI's CHWBL load balancer).

Each endpoint owns `replicas` points on a 64-bit ring. A key goes to the first endpoint clockwise
from its hash whose load is within `(1 + epsilon) * mean load` (counting the new request), so
requests that share a prefix land on the pod whose cache holds it, until that pod is busier than
its share; then the next one on the ring takes the spill, and it too keeps that prefix from then on.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def hash64(data: str) -> int:
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class Ring:
    def __init__(self, names: Sequence[str], replicas: int = 100) -> None:
        points = sorted((hash64(f"{n}#{i}"), n) for n in names for i in range(replicas))
        self._hashes = [h for h, _ in points]
        self._names = [n for _, n in points]
        self.names = frozenset(names)

    def walk(self, key: str) -> list[str]:
        """The distinct endpoint names in ring order, starting at the key's hash."""
        if not self._hashes:
            return []
        start = bisect.bisect(self._hashes, hash64(key)) % len(self._hashes)
        seen: dict[str, None] = {}
        for i in range(len(self._names)):
            seen.setdefault(self._names[(start + i) % len(self._names)], None)
            if len(seen) == len(self.names):
                break
        return list(seen)


def bounded_choice(
    ring: Ring, key: str, items: dict[str, T], load: Callable[[T], float], epsilon: float
) -> tuple[T, bool]:
    """The first item on the key's walk whose load is under the bound; (item, True) when that is
    the key's own first choice. With every item over the bound (cannot happen for epsilon > 0 when
    loads are counted the same way), the least loaded."""
    total = sum(load(v) for v in items.values()) + 1  # the request being placed
    bound = math.ceil(total / len(items) * (1 + epsilon))
    order = ring.walk(key)
    for i, name in enumerate(order):
        if load(items[name]) + 1 <= bound:
            return items[name], i == 0
    return min(items.values(), key=load), False
