"""A real `pagoda serve` process on a free loopback port, for the server's integration tests."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import httpx
from process_harness import LoggedProcess, free_port, http_ok, wait_for
from prometheus_client.parser import text_string_to_metric_families

STARTUP_TIMEOUT_S = 240.0


class ServerProcess(LoggedProcess):
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="pagoda-serve-", suffix=".log")
        os.close(fd)
        cmd = [
            sys.executable,
            "-m",
            "pagoda.engine.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--uvicorn-log-level",
            "warning",
            *args,
        ]
        super().__init__("pagoda serve", cmd, Path(log), env)

    def wait_healthy(self, timeout: float = STARTUP_TIMEOUT_S) -> ServerProcess:
        wait_for("/health", lambda: http_ok(f"{self.url}/health"), timeout, process=self)
        return self

    def metrics(self) -> dict[tuple[str, tuple], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()
        self.log_path.unlink(missing_ok=True)
