"""The prometheus-operator ServiceMonitor (rendered only where its CRD exists)."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import Spec


def servicemonitor(s: Spec) -> dict[str, Any] | None:
    if not s.service_monitor:
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(s),
        "spec": {
            "selector": {"matchLabels": s.selector},
            "namespaceSelector": {"matchNames": [s.namespace]},
            "endpoints": [
                {"port": "http", "path": "/metrics", "interval": s.service_monitor_interval}
            ],
        },
    }
