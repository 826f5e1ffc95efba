"""Shared by the monitoring tests: the chart's rendered alerts and dashboard queries, promtool."""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
# The chart tests' renderer and the server tests' `pagoda serve` process, reused rather than copied.
sys.path[:0] = [str(REPO / "tests" / "unit" / "chart"), str(REPO / "tests" / "integration" / "server")]

from chart_render import DASHBOARD, by_kind, find_helm, render  # noqa: E402

# Grafana's variables as a dashboard with "All" selected expands them.
GRAFANA_VARS = {"$namespace": ".*", "$model_name": ".*", "$__rate_interval": "1m"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install prometheus (Debian's package has prometheus and promtool)")
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
