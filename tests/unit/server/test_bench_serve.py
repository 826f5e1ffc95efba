"""`pagoda bench serve` against the fake engine behind a real socket."""

from __future__ import annotations

import argparse
import json

from server_fakes import FakeAsyncLLM, serve_in_thread

from pagoda.engine.bench.serve import add_bench_serve_args, run_bench_serve
from pagoda.engine.server.api_server import build_app


def bench_args(url: str, *extra: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_bench_serve_args(p)
    return p.parse_args(
        [
            "--base-url",
            url,
            "--num-prompts",
            "6",
            "--input-len",
            "3",
            "8",
            "--output-len",
            "2",
            "6",
            "--vocab-size",
            "256",
            "--disable-tqdm",
            *extra,
        ]
    )


def test_fixed_concurrency_completions(tmp_path, capsys):
    engine = FakeAsyncLLM(step_delay=0.02)  # slow enough that two requests overlap
    with serve_in_thread(build_app({"fake": engine})) as url:
        result = tmp_path / "r.json"
        assert (
            run_bench_serve(bench_args(url, "--max-concurrency", "2", "--result-file", str(result)))
            == 0
        )
    s = json.loads(result.read_text())
    assert s["completed"] == 6 and s["failed"] == 0 and s["model"] == "fake"
    assert engine.max_active == 2
    drawn = sorted(p.max_tokens for _, p, _, _ in engine.requests)
    assert s["total_output_tokens"] == sum(drawn)
    assert s["total_input_tokens"] == sum(len(prompt) for prompt, _, _, _ in engine.requests)
    assert all(p.ignore_eos and p.temperature == 0.0 for _, p, _, _ in engine.requests)
    assert 0 < s["p50_ttft_ms"] <= s["p99_ttft_ms"] <= s["p99_e2el_ms"]
    assert s["mean_itl_ms"] > 0 and s["output_throughput"] > 0
    assert len(s["per_request"]) == 6
    assert "Serving Benchmark Result" in capsys.readouterr().out


def test_poisson_rate_chat(tmp_path):
    engine = FakeAsyncLLM()
    with serve_in_thread(build_app({"fake": engine})) as url:
        result = tmp_path / "r.json"
        args = bench_args(
            url,
            "--endpoint",
            "/v1/chat/completions",
            "--request-rate",
            "50",
            "--result-file",
            str(result),
        )
        assert run_bench_serve(args) == 0
    s = json.loads(result.read_text())
    assert s["completed"] == 6 and s["request_rate"] == 50.0
    assert s["duration_s"] > 0.03  # five exponential gaps of mean 20 ms


def test_failures_are_counted_not_hidden(tmp_path):
    engine = FakeAsyncLLM(max_model_len=10)  # every drawn request is too long: 400s
    with serve_in_thread(build_app({"fake": engine})) as url:
        result = tmp_path / "r.json"
        assert (
            run_bench_serve(
                bench_args(url, "--input-len", "20", "20", "--result-file", str(result))
            )
            == 1
        )
    s = json.loads(result.read_text())
    assert s["completed"] == 0 and s["failed"] == 6 and "HTTP 400" in s["errors"][0]
