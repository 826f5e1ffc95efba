"""One lock per InferenceService, shared by its reconcile and its observe timer, so a reconcile and
a scaling or rollout decision never interleave."""

from __future__ import annotations

import asyncio
from collections import defaultdict

_LOCKS: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)


def lock(namespace: str, name: str) -> asyncio.Lock:
    return _LOCKS[(namespace, name)]


def forget(namespace: str, name: str) -> None:
    _LOCKS.pop((namespace, name), None)


def reset() -> None:
    """asyncio locks belong to one event loop: a second operator run in this process starts afresh."""
    _LOCKS.clear()
