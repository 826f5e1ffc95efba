"""A real Prometheus scraping a real `pagoda serve` (the default model, with a KV cache of 12
blocks): after a few requests and a burst that overfills the cache, every engine series the
dashboard and alerts read is in the scrape, every engine panel's query returns data, the chart's
alert rules evaluate without errors, and each engine alert fires when its condition holds (TTFT
above a bound set low, the cache saturated, requests preempted, the engine killed).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from monitoring_stack import Prometheus, dashboard_queries, queried_metric_names, rule_groups
from server_process import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "smol"
# Engine panels read vllm:*; the operator's are checked in test_monitoring_operator_live; the
# gateway row's pagoda_gateway_* series exist only where a gateway runs (not in this tier: its
# names are checked against the gateway's code by tests/unit/chart/test_chart_metric_names.py).
ENGINE_QUERIES = [
    (t, e)
    for t, e in dashboard_queries()
    if "pagoda_operator_" not in e and "pagoda_gateway_" not in e
]
# Bounds low enough for this engine's load to cross; `for: 0s` fires at once.
RULE_VALUES = [
    'monitoring.prometheusRule.rules.ttftHigh={"thresholdSeconds": 0.000001, "for": "0s"}',
    'monitoring.prometheusRule.rules.engineDown={"for": "0s"}',
    'monitoring.prometheusRule.rules.kvCacheSaturated={"threshold": 0.5, "for": "0s"}',
    'monitoring.prometheusRule.rules.preemptionsHigh={"threshold": 0.001, "for": "0s"}',
]
# 12 blocks of 16 tokens: one request of up to 192 tokens fits, four of about 100 do not.
KV_BLOCKS, MAX_LEN = 12, 192


@pytest.fixture(scope="module")
def engine():
    proc = ServerProcess(
        "--served-model-name",
        MODEL,
        "--max-model-len",
        str(MAX_LEN),
        "--max-num-seqs",
        "6",
        "--num-gpu-blocks-override",
        str(KV_BLOCKS),
    )
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def prometheus(engine, tmp_path_factory):
    port = engine.url.rsplit(":", 1)[1]
    # The labels prometheus-operator's ServiceMonitor gives an engine pod's target.
    job = {
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{port}"],
                "labels": {"namespace": "pagoda-test", "pod": "smol-0", "container": "engine"},
            }
        ]
    }
    prom = Prometheus(
        tmp_path_factory.mktemp("prometheus"), {"smol": job}, rule_groups(*RULE_VALUES)
    )
    try:
        prom.wait_ready()
        prom.wait_for(
            "the engine's first scrape", lambda: prom.query('vllm:num_requests_running{job="smol"}')
        )
        _traffic(engine)
        # Two scrapes after the traffic, so rates over the last minute see it.
        prom.wait_for(
            "the requests counted",
            lambda: prom.query(
                'increase(vllm:request_success_total{finished_reason="length"}[1m]) > 0'
            ),
        )
        time.sleep(2.5)
        yield prom
    finally:
        prom.stop()


def _traffic(engine: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="none", max_retries=0, timeout=300)
    prompt = "The history of the city of Paris begins with a small fishing village on an island in the Seine. "
    for i in range(3):  # the same long prefix each time: prefix-cache hits from the second on
        client.completions.create(model=MODEL, prompt=prompt + str(i), max_tokens=8, temperature=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Count to ten."}],
        max_tokens=12,
        stream=True,
    )
    assert len([c for c in stream]) > 2

    # Four at once, each growing to 7 blocks of the 12: the cache fills and the scheduler preempts.
    def long(i: int) -> int:
        out = client.completions.create(
            model=MODEL,
            prompt=f"{i}: " + prompt[:120],
            max_tokens=64,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        return out.usage.completion_tokens

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(long, range(4))) == [64] * 4


def test_live_scrape_has_every_queried_engine_series(engine, prometheus):
    exprs = [e for _, e in ENGINE_QUERIES] + [r["expr"] for g in rule_groups() for r in g["rules"]]
    wanted = {n for n in queried_metric_names(exprs) if n.startswith("vllm:")}
    scraped_text = httpx.get(f"{engine.url}/metrics", timeout=10).text
    scraped = set(prometheus.api("label/__name__/values"))
    for name in wanted:
        assert f"\n{name}{{" in scraped_text, f"{name} is not in the engine's /metrics"
        assert name in scraped, f"{name} is not in Prometheus"


@pytest.mark.parametrize("title,expr", ENGINE_QUERIES, ids=[t for t, _ in ENGINE_QUERIES])
def test_engine_panel_query_returns_data(prometheus, title, expr):
    result = prometheus.query(expr)
    assert result, f"{title}: no data for {expr}"
    # The series are the engine's, labelled as the panel's legend expects.
    for series in result:
        if "model_name" in expr.split("by (", 1)[-1].split(")")[0]:
            assert series["metric"]["model_name"] == MODEL


def test_panels_show_the_traffic(prometheus):
    def value(expr: str) -> float:
        (s,) = prometheus.query(expr)
        return float(s["value"][1])

    # Windows reach back over all the traffic (Prometheus started just before it).
    assert (
        value('sum(increase(vllm:request_success_total{finished_reason="length"}[5m]))')
        >= 3 + 1 + 4
    )
    assert value("sum(increase(vllm:generation_tokens_total[5m]))") >= 3 * 8 + 12 - 1 + 4 * 64
    assert value("sum(increase(vllm:prefix_cache_hits_total[5m]))") > 0
    assert value("sum(increase(vllm:num_preemptions_total[5m]))") > 0
    assert value("max_over_time(vllm:kv_cache_usage_perc[5m])") > 0.5
    assert (
        0
        < value(
            "histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5m])))"
        )
        < 60
    )


def test_alert_rules_evaluate_and_fire(engine, prometheus):
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {
        "PagodaEngineDown",
        "PagodaKVCacheSaturated",
        "PagodaTTFTHigh",
        "PagodaPreemptionsHigh",
        "PagodaReplicasNotReady",
    }
    prometheus.wait_for(
        "every rule evaluated",
        lambda: all(
            r["lastEvaluation"] > "2000"
            for r in (r for g in prometheus.api("rules")["groups"] for r in g["rules"])
        ),
    )
    for r in prometheus.api("rules")["groups"]:
        for rule in r["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
    firing = prometheus.wait_for(
        "PagodaTTFTHigh firing",
        lambda: [a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaTTFTHigh"],
    )
    assert (
        firing[0]["labels"]["model_name"] == MODEL
        and firing[0]["labels"]["namespace"] == "pagoda-test"
    )
    assert not [a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaEngineDown"]
    # The burst is over by now; Prometheus's ALERTS series remembers that these fired during it.
    for name in ("PagodaKVCacheSaturated", "PagodaPreemptionsHigh"):
        fired = prometheus.query(
            f'max_over_time(ALERTS{{alertname="{name}", alertstate="firing"}}[5m])'
        )
        assert fired and fired[0]["metric"]["model_name"] == MODEL, name

    engine.proc.kill()  # the engine dies; its target fails the next scrape
    engine.proc.wait(timeout=30)
    down = prometheus.wait_for(
        "PagodaEngineDown firing",
        lambda: [a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaEngineDown"],
    )
    assert down[0]["labels"]["job"] == "smol" and down[0]["labels"]["severity"] == "critical"
