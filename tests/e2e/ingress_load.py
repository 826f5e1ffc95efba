"""Completions kept going through the Ingress from threads: one client shows that an engine keeps
answering (every failure is recorded), several at once queue requests on an engine that runs one
sequence at a time."""

from __future__ import annotations

import threading
import time

import httpx


def completion(model: str, max_tokens: int) -> dict:
    return {
        "model": model,
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }


def answered(ingress_url: str, host: str, model: str) -> bool:
    """Whether a short completion through the Ingress succeeds now."""
    try:
        return httpx.post(
            f"{ingress_url}/v1/completions",
            headers={"Host": host},
            json=completion(model, 4),
            timeout=60,
        ).is_success
    except httpx.HTTPError:
        return False


class IngressLoad:
    """`clients` threads, each sending one completion after another to the Ingress host `host`
    until stopped; `ok` counts the answers, `errors` says when and how the others failed."""

    def __init__(
        self, ingress_url: str, host: str, model: str, clients: int, max_tokens: int
    ) -> None:
        self.url, self.headers = f"{ingress_url}/v1/completions", {"Host": host}
        self.body = completion(model, max_tokens)
        self.ok, self.errors = 0, list[str]()
        self.stopped, self._lock = threading.Event(), threading.Lock()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        with httpx.Client(timeout=600) as client:
            while not self.stopped.is_set():
                try:
                    client.post(self.url, headers=self.headers, json=self.body).raise_for_status()
                except httpx.HTTPError as e:
                    if not self.stopped.is_set():
                        with self._lock:
                            self.errors.append(f"{time.strftime('%H:%M:%S')} {e!r}")
                    time.sleep(1)
                    continue
                with self._lock:
                    self.ok += 1

    def stop(self, timeout: float = 30) -> None:
        """No new requests; waits up to `timeout` seconds in all for those in flight."""
        self.stopped.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
