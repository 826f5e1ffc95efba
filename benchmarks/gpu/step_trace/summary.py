"""Summarise step traces (see sitecustomize.py): step durations by the kind of batch they waited
for, and the gaps between steps (the core's loop outside EngineCore.step).

    python benchmarks/gpu/step_trace/summary.py PREFIX.*
"""

import sys

import numpy as np


def pct(a: np.ndarray, q: float) -> float:
    return float(np.percentile(a, q)) * 1e3 if len(a) else float("nan")


for path in sys.argv[1:]:
    rows = np.loadtxt(path, ndmin=2)
    if len(rows) < 10:
        continue
    if ".api." in path:
        _, lag, took, n = rows.T
        print(f"{path}: {len(rows)} output batches")
        print(
            f"  core -> API lag p50 {pct(lag, 50):.3f} p99 {pct(lag, 99):.3f} max {pct(lag, 100):.3f} ms"
        )
        print(
            f"  API handling p50 {pct(took, 50):.3f} p99 {pct(took, 99):.3f} max {pct(took, 100):.3f} ms"
        )
        continue
    t0, dur, tokens, seqs, prefills = rows.T
    gaps = t0[1:] - (t0[:-1] + dur[:-1])
    prev_prefill = np.concatenate(([0], prefills[:-1])) > 0
    prev_tokens = np.concatenate(([0], tokens[:-1]))
    busy = tokens > 0
    print(f"{path}: {len(rows)} steps, {int(prefills.astype(bool).sum())} launched a prefill")
    for name, m in (
        ("all", busy),
        ("after a decode-only step", busy & ~prev_prefill),
        ("after a step with a prefill", busy & prev_prefill),
    ):
        d = dur[m]
        print(
            f"  {name:28s} n={m.sum():6d} p50 {pct(d, 50):7.2f} p90 {pct(d, 90):7.2f} "
            f"p99 {pct(d, 99):7.2f} max {pct(d, 100):7.2f} ms"
        )
    print(
        f"  loop gaps p50 {pct(gaps, 50):.3f} p99 {pct(gaps, 99):.3f} max {pct(gaps, 100):.3f} ms"
    )
    slow = np.argsort(dur)[-8:]
    for i in sorted(slow):
        print(
            f"  slow step {i}: {dur[i] * 1e3:.1f} ms, launched {int(tokens[i])} tokens "
            f"({int(seqs[i])} seqs, {int(prefills[i])} prefilling); before it {int(prev_tokens[i])}"
        )
