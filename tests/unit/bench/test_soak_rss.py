"""`pagoda bench soak --pid` counts the server's whole process tree: `pagoda serve` runs its engine
core in a child process, whose RSS (the weights, the KV pool) a parent-only reading would miss."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from pagoda.engine.bench.soak import process_tree, rss_mib


def test_rss_counts_the_children():
    # a child holding 64 MiB written (resident), as the engine core holds its KV pool
    child = subprocess.Popen(
        [sys.executable, "-c", "b = bytearray(64 << 20); print(1, flush=True); input()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "1"
        me = os.getpid()
        assert child.pid in process_tree(me)
        own = rss_mib_of_one(me)
        assert rss_mib(me) >= own + 64
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while child.pid in process_tree(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.pid not in process_tree(os.getpid())


def rss_mib_of_one(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
