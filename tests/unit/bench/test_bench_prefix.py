"""`pagoda bench prefix` end to end at a tiny scale: the shared workload hits, the unique one never."""

from __future__ import annotations

import json

from pagoda.engine.bench.prefix import prefix_workload, summarize
from pagoda.engine.cli import main


def test_prefix_workloads() -> None:
    shared = prefix_workload(3, 40, 5, 1000, seed=0, shared=True)
    unique = prefix_workload(3, 40, 5, 1000, seed=0, shared=False)
    assert all(len(p) == 45 for p in shared + unique)
    assert shared[0][:40] == shared[1][:40] == shared[2][:40] and shared[0][40:] != shared[1][40:]
    assert len({tuple(p[:40]) for p in unique}) == 3


def test_bench_prefix_runs_both_workloads(tmp_path) -> None:
    out = tmp_path / "prefix.json"
    rc = main(
        [
            "bench",
            "prefix",
            "--load-format",
            "dummy",
            "--dummy-shape",
            "smollm2-135m",
            "--max-num-seqs",
            "8",
            "--max-num-batched-tokens",
            "256",
            "--max-model-len",
            "256",
            "--kv-cache-memory-bytes",
            str(64 << 20),
            "--num-prompts",
            "4",
            "--shared-prefix-len",
            "64",
            "--question-len",
            "8",
            "--output-len",
            "2",
            "--result-file",
            str(out),
        ]
    )
    assert rc == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [(r["workload"], r["prefix_caching"]) for r in runs] == [
        ("shared", False),
        ("shared", True),
        ("unique", False),
        ("unique", True),
    ]
    by = {(r["workload"], r["prefix_caching"]): r for r in runs}
    # 3 of 4 requests find the 64-token prefix (4 full blocks of 16) cached: 192 of 288 prompt tokens.
    assert by[("shared", True)]["cached_prompt_pct"] == round(100 * 3 * 64 / (4 * 72), 1)
    assert by[("shared", False)]["cached_prompt_pct"] == 0
    assert by[("unique", True)]["cached_prompt_pct"] == 0
    assert result["summary"] == summarize(runs)
