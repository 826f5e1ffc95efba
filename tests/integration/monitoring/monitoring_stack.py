"""Shared by the monitoring tests: the chart's rendered alerts and dashboard queries, promtool,
and a real Prometheus process. (Not conftest.py: test modules import it by name, and every test
folder has its own `conftest`.)"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
# The chart tests' renderer and the server tests' `pagoda serve` process, reused rather than copied.
sys.path[:0] = [
    str(REPO / "tests" / "unit" / "chart"),
    str(REPO / "tests" / "integration" / "server"),
]

import process_harness  # noqa: E402
from chart_render import DASHBOARD, by_kind, find_helm, render  # noqa: E402
from process_harness import LoggedProcess, free_port, http_ok  # noqa: E402

T = TypeVar("T")

# Grafana's variables as a dashboard with "All" selected expands them.
GRAFANA_VARS = {"$namespace": ".*", "$model_name": ".*", "$__rate_interval": "1m"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: apt-get install prometheus (Debian's package has prometheus and promtool)"
        )
    return path


def rule_groups(*values: str) -> list[dict[str, Any]]:
    """The PrometheusRule's groups as the chart renders them, with extra `--set-json` values."""
    args = ["--set", "monitoring.prometheusRule.enabled=true"]
    for v in values:
        args += ["--set-json", v]
    (rule,) = by_kind(render(find_helm(), *args, crds=False), "PrometheusRule")
    return rule["spec"]["groups"]


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL with Grafana's variables expanded) for every panel target."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            assert not re.search(r"\$\w", expr), expr
            out.append((f"{p['title']} {t['refId']}", expr))
    return out


class Prometheus(LoggedProcess):
    """A real Prometheus (Debian's package) on loopback, scraping the given targets every second."""

    def __init__(
        self, workdir: Path, jobs: dict[str, dict[str, Any]], rules: list[dict[str, Any]]
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": rules}))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(workdir / "rules.yaml")],
            "scrape_configs": [{"job_name": name, **job} for name, job in jobs.items()],
        }
        (workdir / "prometheus.yaml").write_text(yaml.safe_dump(config))
        cmd = [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yaml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        super().__init__("prometheus", cmd, workdir / "prometheus.log")

    def wait_ready(self, timeout: float = 60) -> Prometheus:
        process_harness.wait_for(
            "/-/ready", lambda: http_ok(f"{self.url}/-/ready"), timeout, 0.2, process=self
        )
        return self

    def api(self, path: str, **params: str) -> Any:
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def wait_for(self, what: str, probe: Callable[[], T], timeout: float = 30) -> T:
        return process_harness.wait_for(
            what, probe, timeout, 0.5, process=self, context=self.targets
        )

    def targets(self) -> str:
        targets = [
            (t["scrapeUrl"], t["health"], t["lastError"])
            for t in self.api("targets")["activeTargets"]
        ]
        return f"targets {targets}"

    def firing(self) -> list[dict[str, Any]]:
        return [a for a in self.api("alerts")["alerts"] if a["state"] == "firing"]


def queried_metric_names(exprs: list[str]) -> set[str]:
    return {
        n
        for e in exprs
        for n in re.findall(r"\b(vllm:[a-zA-Z0-9_:]+|pagoda_operator_[a-zA-Z0-9_]+)", e)
    }
