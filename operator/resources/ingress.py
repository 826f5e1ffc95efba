"""The Ingress: class, host, TLS, and timeouts long enough for streamed completions."""

from __future__ import annotations

from typing import Any

from pagoda.operator.resources import metadata
from pagoda.operator.spec import Spec

# A long generation streams for minutes; proxies' 60 s defaults would cut it. Buffering off so
# server-sent events reach the client token by token. (ingress-nginx names; others ignore them.)
STREAMING_ANNOTATIONS = {
    "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-send-timeout": "3600",
    "nginx.ingress.kubernetes.io/proxy-buffering": "off",
    "nginx.ingress.kubernetes.io/proxy-body-size": "64m",
}


def ingress(s: Spec) -> dict[str, Any] | None:
    ing = s.ingress
    if ing is None:
        return None
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": ing.path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": s.name, "port": {"name": "http"}}},
                }
            ]
        }
    }
    if ing.host:
        rule["host"] = ing.host
    spec: dict[str, Any] = {"rules": [rule]}
    if ing.class_name:
        spec["ingressClassName"] = ing.class_name
    if ing.tls_secret:
        spec["tls"] = [{"hosts": [ing.host], "secretName": ing.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata(s, annotations={**STREAMING_ANNOTATIONS, **ing.annotations}),
        "spec": spec,
    }


def ingress_url(s: Spec) -> str | None:
    ing = s.ingress
    if ing is None or not ing.host:
        return None
    scheme = "https" if ing.tls_secret else "http"
    return f"{scheme}://{ing.host}{ing.path.rstrip('/')}"
