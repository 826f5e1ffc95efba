"""metrics_scrape: parsing the engine's real exposition, quantiles, windows, resets, scraping."""

import uuid

import httpx
import pytest
from prometheus_client import generate_latest

from pagoda.engine.metrics import EngineMetrics
from pagoda.operator.metrics_scrape import History, Sample, bucket_increase, parse, quantile, scrape


def engine_text(model: str) -> str:
    """The process-wide registry, cut to one model's series."""
    text = generate_latest().decode()
    return (
        "\n".join(
            line
            for line in text.splitlines()
            if line.startswith("#") or f'model_name="{model}"' in line
        )
        + "\n"
    )


def test_parses_what_the_engine_exports():
    name = f"m-{uuid.uuid4().hex[:6]}"
    m = EngineMetrics(name, max_model_len=2048)
    m.running.set(3)
    m.waiting.set(5)
    m.kv_usage.set(0.25)
    m.generation_tokens.inc(120)
    for ttft in (0.03, 0.07, 0.3, 2.0):
        m.ttft.observe(ttft)
    m.finished("stop")
    m.finished("stop")
    m.finished("abort")
    s = parse(engine_text(name), time=1.0)
    assert (s.running, s.waiting, s.kv_usage, s.generation_tokens) == (3, 5, 0.25, 120)
    assert s.finished == {"stop": 2, "length": 0, "abort": 1}
    assert s.ttft[-1] == (float("inf"), 4)
    assert dict(s.ttft)[0.1] == 2


def test_sums_engines_and_averages_kv_usage():
    text = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="a"} 2
vllm:num_requests_waiting{engine="1",model_name="a"} 3
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="a"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="a"} 0.6
"""
    s = parse(text, 0)
    assert s.waiting == 5 and s.kv_usage == pytest.approx(0.4)


def test_garbage_is_a_value_error():
    with pytest.raises(ValueError):
        parse("<html>not metrics</html>\n", 0)


def test_quantile_like_prometheus():
    buckets = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert quantile(0.95, buckets) == pytest.approx(0.5 + 0.5 * 35 / 40)
    assert quantile(0.05, buckets) == pytest.approx(0.05)
    assert quantile(0.99, [(1.0, 1.0), (float("inf"), 100.0)]) == 1.0  # in +Inf: its lower edge
    assert quantile(0.95, [(1.0, 0.0), (float("inf"), 0.0)]) is None


def test_bucket_increase_handles_reset():
    old = ((1.0, 5.0), (float("inf"), 10.0))
    new = ((1.0, 7.0), (float("inf"), 13.0))
    assert bucket_increase(new, old) == [(1.0, 2.0), (float("inf"), 3.0)]
    restarted = ((1.0, 1.0), (float("inf"), 2.0))
    assert bucket_increase(restarted, old) == list(restarted)


def sample(t, ok=0.0, err=0.0, tokens=0.0, fast=0.0, slow=0.0, aborted=0.0):
    return Sample(
        time=t,
        generation_tokens=tokens,
        finished={"stop": ok, "error": err, "abort": aborted},
        ttft=((0.5, fast), (5.0, fast + slow), (float("inf"), fast + slow)),
    )


def test_window_over_history():
    h = History(keep_seconds=60)
    for t in range(
        0, 130, 10
    ):  # 10 requests and 100 tokens every 10 s; one in ten slow, one error per 20 s
        h.add("a", sample(t, ok=t, err=t / 20, tokens=10 * t, fast=0.9 * t, slow=0.1 * t))
    w = h.window(["a"], 60, now=120)
    assert w.covered_seconds == 60
    assert w.requests == pytest.approx(60 + 3) and w.errors == pytest.approx(3)
    assert w.tokens_per_second == pytest.approx(10)
    assert 0.5 < w.ttft_p95 < 5.0


def test_client_disconnects_are_not_errors():
    """finished_reason="abort" is a client that went away: a request, not an error. (The fault:
    aborts counted against the rollout, so impatient clients could roll back a good revision.)"""
    h = History(keep_seconds=60)
    h.add("a", sample(0))
    h.add("a", sample(60, ok=10, aborted=10))
    w = h.window(["a"], 60, now=60)
    assert (w.requests, w.errors) == (20, 0)


def test_window_counter_reset_and_stopped_pod():
    h = History(keep_seconds=60)
    h.add("a", sample(0, ok=100))
    h.add("a", sample(30, ok=5))  # restarted: 5 since
    h.add("gone", sample(0, ok=50))  # stopped answering
    h.add("gone", sample(10, ok=60))
    w = h.window(["a", "gone"], 60, now=80)
    assert w.requests == 5


def test_history_keeps_the_window_baseline():
    h = History(keep_seconds=30)
    for t in range(0, 100, 10):
        h.add("a", sample(t, ok=t))
    assert h.samples["a"][0].time <= 90 - 30
    h.forget_except(set())
    assert h.latest("a") is None


async def test_scrape_marks_failures_none():
    ok_text = '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{engine="0",model_name="x"} 4\n'

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "10.0.0.1":
            return httpx.Response(200, text=ok_text)
        if request.url.host == "10.0.0.2":
            return httpx.Response(503, text="starting")
        return httpx.Response(200, text="}{ not prometheus")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        out = await scrape(
            client,
            {
                "a": "http://10.0.0.1:8000/metrics",
                "b": "http://10.0.0.2:8000/metrics",
                "c": "http://10.0.0.3:8000/metrics",
            },
            5.0,
        )
    assert out["a"].running == 4 and out["a"].time == 5.0
    assert out["b"] is None and out["c"] is None
