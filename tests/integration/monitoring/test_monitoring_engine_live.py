"""A real Prometheus scraping a real `pagoda serve` (the default model): after a few requests,
every engine series the dashboard and alerts read is in the scrape, every engine panel's query
returns data, the chart's alert rules evaluate without errors, and the alerts fire when their
condition holds (TTFT above a bound set low; the engine killed).
"""
from __future__ import annotations

import time

import httpx
import openai
import pytest
from monitoring_stack import Prometheus, dashboard_queries, queried_metric_names, rule_groups
from server_process import ServerProcess

pytestmark = pytest.mark.integration

MODEL = "smol"
# Engine panels read vllm:*; the operator's are checked in test_monitoring_operator_live.
ENGINE_QUERIES = [(t, e) for t, e in dashboard_queries() if "pagoda_operator_" not in e]
# Alerts set to fire on a healthy CPU engine: any TTFT is above 1 µs; `for: 0s` fires at once.
RULE_VALUES = ['monitoring.prometheusRule.rules.ttftHigh={"thresholdSeconds": 0.000001, "for": "0s"}',
               'monitoring.prometheusRule.rules.engineDown={"for": "0s"}']


@pytest.fixture(scope="module")
def engine():
    proc = ServerProcess("--served-model-name", MODEL, "--max-model-len", "512", "--max-num-seqs", "4")
    try:
        yield proc.wait_healthy()
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def prometheus(engine, tmp_path_factory):
    port = engine.url.rsplit(":", 1)[1]
    # The labels prometheus-operator's ServiceMonitor gives an engine pod's target.
    job = {"static_configs": [{"targets": [f"127.0.0.1:{port}"],
                               "labels": {"namespace": "pagoda-test", "pod": "smol-0", "container": "engine"}}]}
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), {"smol": job}, rule_groups(*RULE_VALUES))
    try:
        prom.wait_ready()
        prom.wait_for("the engine's first scrape", lambda: prom.query('vllm:num_requests_running{job="smol"}'))
        _traffic(engine)
        # Two scrapes after the traffic, so rates over the last minute see it.
        prom.wait_for("the requests counted", lambda: prom.query(
            'increase(vllm:request_success_total{finished_reason="length"}[1m]) > 0'))
        time.sleep(2.5)
        yield prom
    finally:
        prom.stop()


def _traffic(engine: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{engine.url}/v1", api_key="none", max_retries=0, timeout=120)
    prompt = "The history of the city of Paris begins with a small fishing village on an island in the Seine. "
    for i in range(3):  # the same long prefix each time: prefix-cache hits from the second on
        client.completions.create(model=MODEL, prompt=prompt + str(i), max_tokens=8, temperature=0)
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Count to ten."}],
                                            max_tokens=12, stream=True)
    assert len([c for c in stream]) > 2


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

    assert value('sum(increase(vllm:request_success_total{finished_reason="length"}[1m]))') >= 4
    assert value("sum(increase(vllm:generation_tokens_total[1m]))") >= 3 * 8 + 12 - 1
    assert value("sum(increase(vllm:prefix_cache_hits_total[1m]))") > 0
    assert 0 < value("histogram_quantile(0.5, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[1m])))") < 60


def test_alert_rules_evaluate_and_fire(engine, prometheus):
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {"PagodaEngineDown", "PagodaKVCacheSaturated", "PagodaTTFTHigh",
                                          "PagodaPreemptionsHigh", "PagodaReplicasNotReady"}
    prometheus.wait_for("every rule evaluated", lambda: all(r["lastEvaluation"] > "2000" for r in
                        (r for g in prometheus.api("rules")["groups"] for r in g["rules"])))
    for r in prometheus.api("rules")["groups"]:
        for rule in r["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), rule
    firing = prometheus.wait_for("PagodaTTFTHigh firing", lambda: [
        a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaTTFTHigh"])
    assert firing[0]["labels"]["model_name"] == MODEL and firing[0]["labels"]["namespace"] == "pagoda-test"
    assert not [a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaEngineDown"]

    engine.proc.kill()  # the engine dies; its target fails the next scrape
    engine.proc.wait(timeout=30)
    down = prometheus.wait_for("PagodaEngineDown firing", lambda: [
        a for a in prometheus.firing() if a["labels"]["alertname"] == "PagodaEngineDown"])
    assert down[0]["labels"]["job"] == "smol" and down[0]["labels"]["severity"] == "critical"
