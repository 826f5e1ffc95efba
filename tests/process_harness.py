"""Child processes and waiting, shared by the integration tier's harnesses.

`LoggedProcess` runs a command with its output in a log file; `wait_for` polls a probe until it
returns something truthy and fails naming what it waited for, the last value seen and, when it
watches a process, that process's log (at once, if the process exits first).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    """Whether GET url answers 200 now (a refused or timed-out connection is a no)."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class LoggedProcess:
    """`cmd` started now, stdout and stderr into the file `log`, unbuffered if it is Python."""

    def __init__(
        self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.log_path = log
        self.log = open(log, "w+")  # noqa: SIM115 (the child writes to it for its whole life)
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {}),
        )

    def output(self, tail: int | None = 5000) -> str:
        """What it wrote: the last `tail` characters, or all of it."""
        if not self.log.closed:
            self.log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self.log.close()


def wait_for(
    what: str,
    probe: Callable[[], T],
    timeout: float = 30,
    every: float = 0.25,
    process: LoggedProcess | None = None,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll `probe` until it returns something truthy, and return that. `context` says more on a
    timeout (what the test can see of the state it waited on)."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if process is not None and process.proc.poll() is not None:
            pytest.fail(
                f"{process.name} exited with {process.proc.returncode} while waiting for "
                f"{what}:\n{process.output()}"
            )
        last = probe()
        if last:
            return last
        time.sleep(every)
    more = f"; {context()}" if context is not None else ""
    log = f"\n{process.name} log:\n{process.output()}" if process is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}; last saw {last!r}{more}{log}")
