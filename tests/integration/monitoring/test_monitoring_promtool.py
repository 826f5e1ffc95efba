"""promtool (Prometheus's own parser and rule engine) on the chart's alerts and the dashboard's
queries: they parse, and each alert fires on the series it is meant for and not on others."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from monitoring_stack import dashboard_queries, rule_groups, tool

pytestmark = pytest.mark.integration


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.mark.parametrize(
    "values",
    [
        [],
        [
            "monitoring.prometheusRule.rules.ttftHigh.thresholdSeconds=1.5",
            'monitoring.prometheusRule.additionalLabels={"team": "ml"}',
        ],
    ],
    ids=["default", "custom"],
)
def test_alert_rules_pass_promtool_check(tmp_path, values):
    f = tmp_path / "rules.yaml"
    f.write_text(yaml.safe_dump({"groups": rule_groups(*values)}))
    out = promtool("check", "rules", str(f))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 5 rules found" in out.stdout


def test_dashboard_queries_parse(tmp_path):
    rules = [
        {"record": f"pagoda:dashboard_query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(dashboard_queries())
    ]
    f = tmp_path / "dashboard.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = promtool("check", "rules", str(f))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout


ENGINE = 'job="isvc", instance="10.0.0.1:8000", namespace="ml", model_name="m", engine="0"'
OTHER = 'job="isvc", instance="10.0.0.2:8000", namespace="ml", model_name="m", engine="0"'
FAST = 'job="isvc", instance="10.0.0.2:8000", namespace="ml", model_name="fast", engine="0"'
ENGINE_LABELS = dict(kv.split("=") for kv in ENGINE.replace('"', "").split(", "))


def alert(alertname: str, severity: str, summary: str, description: str, **labels: str) -> dict:
    """An expected alert; the annotations show the templates filled in from labels and value."""
    return {
        "exp_labels": {"alertname": alertname, "severity": severity, **labels},
        "exp_annotations": {"summary": summary, "description": description},
    }


# One scenario per alert: the series that should make it fire (on ENGINE) beside series that
# should not (on OTHER), and when it must and must not be firing. Series are 1 sample a minute.
SCENARIOS = {
    "PagodaEngineDown": (
        [
            ('up{job="isvc", instance="10.0.0.1:8000"}', "1x10 0x30"),
            (f"vllm:num_requests_running{{{ENGINE}}}", "0x10 stale"),
            # Down from the start: never served engine metrics, so not an engine (ReplicasNotReady's case).
            ('up{job="isvc", instance="10.0.0.9:8000"}', "0x40"),
        ],
        {
            "12m": [],
            "20m": [
                alert(
                    "PagodaEngineDown",
                    "critical",
                    "Pagoda engine 10.0.0.1:8000 is down.",
                    "Prometheus has failed to scrape the engine at 10.0.0.1:8000 (job isvc) for 5m.",
                    job="isvc",
                    instance="10.0.0.1:8000",
                )
            ],
        },
    ),
    "PagodaKVCacheSaturated": (
        [
            (f"vllm:kv_cache_usage_perc{{{ENGINE}}}", "0.97x30"),
            (f"vllm:kv_cache_usage_perc{{{OTHER}}}", "0.9x30"),
        ],
        {
            "5m": [],
            "15m": [
                alert(
                    "PagodaKVCacheSaturated",
                    "warning",
                    "KV cache of m on 10.0.0.1:8000 is nearly full.",
                    "KV cache usage is 97%, above 0.95: new requests wait and running ones get preempted. "
                    "Add replicas, lower maxNumSeqs, or give the engine more memory.",
                    **ENGINE_LABELS,
                )
            ],
        },
    ),
    "PagodaTTFTHigh": (
        # 10 requests a minute, all between 2.5 s and 5 s: p95 about 4.9 s.
        [
            (f'vllm:time_to_first_token_seconds_bucket{{{ENGINE}, le="{le}"}}', f"0+{n}x30")
            for le, n in (("1.0", 0), ("2.5", 0), ("5.0", 10), ("+Inf", 10))
        ]
        # The other model's are all under a second.
        + [
            (f'vllm:time_to_first_token_seconds_bucket{{{FAST}, le="{le}"}}', "0+10x30")
            for le in ("1.0", "2.5", "5.0", "+Inf")
        ],
        {
            "8m": [],
            "20m": [
                alert(
                    "PagodaTTFTHigh",
                    "warning",
                    "p95 time to first token of m is high.",
                    "p95 TTFT of m in ml is 4.875s, above 2s.",
                    namespace="ml",
                    model_name="m",
                )
            ],
        },
    ),
    "PagodaPreemptionsHigh": (
        [
            (f"vllm:num_preemptions_total{{{ENGINE}}}", "0+180x30"),
            (f"vllm:num_preemptions_total{{{OTHER}}}", "0+6x30"),
        ],
        {
            "8m": [],
            "20m": [
                alert(
                    "PagodaPreemptionsHigh",
                    "warning",
                    "Engine 10.0.0.1:8000 preempts requests often.",
                    "m preempts 3 requests/s (bound 1): its KV cache is too small for the load.",
                    namespace="ml",
                    instance="10.0.0.1:8000",
                    model_name="m",
                )
            ],
        },
    ),
    "PagodaReplicasNotReady": (
        [
            ('pagoda_operator_desired_replicas{namespace="ml", name="big"}', "3x30"),
            ('pagoda_operator_ready_replicas{namespace="ml", name="big"}', "1x30"),
            ('pagoda_operator_desired_replicas{namespace="ml", name="fine"}', "2x30"),
            ('pagoda_operator_ready_replicas{namespace="ml", name="fine"}', "2x30"),
        ],
        {
            "10m": [],
            "20m": [
                alert(
                    "PagodaReplicasNotReady",
                    "warning",
                    "InferenceService ml/big lacks ready replicas.",
                    "Fewer replicas are ready than the operator wants for 15m: see `kubectl describe inferenceservice "
                    "-n ml big` and the engine pods' events.",
                    namespace="ml",
                    name="big",
                )
            ],
        },
    ),
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_alert_fires_on_its_case_only(tmp_path, name):
    series, expected = SCENARIOS[name]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups()}))
    case = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "alert_rule_test": [
                    {"eval_time": t, "alertname": name, "exp_alerts": alerts}
                    for t, alerts in expected.items()
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(case))
    out = promtool("test", "rules", "test.yaml", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
