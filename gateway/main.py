"""`pagoda gateway`: parse the flags and serve until SIGTERM (then held requests are answered
503 at once and those in flight get --shutdown-timeout seconds to finish; past that, a stream
ends with finish_reason abort and [DONE], a request not answered yet with a 503)."""

from __future__ import annotations

import argparse
import logging
import sys

import kubernetes
from aiohttp import web

from pagoda.gateway.app import CUT_GRACE_S, GatewaySettings, build
from pagoda.gateway.kube import ApiServer
from pagoda.gateway.proxy import ProxySettings
from pagoda.gateway.registry import Registry


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pagoda gateway",
        description="OpenAI-compatible front door: routes each request by its `model` to a "
        "Ready pod of the InferenceService serving it.",
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch every namespace")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--max-body-bytes",
        type=_positive_int,
        default=GatewaySettings.max_body_bytes,
        help="larger request bodies are refused with 413",
    )
    p.add_argument(
        "--queue-size",
        type=_positive_int,
        default=GatewaySettings.queue_size,
        help="requests held per model while it has no ready pod; more get 429",
    )
    p.add_argument(
        "--queue-timeout",
        type=_positive_float,
        default=GatewaySettings.queue_timeout,
        help="seconds a held request waits for a ready pod (a cold start), then 503",
    )
    p.add_argument(
        "--prefix-chars",
        type=_positive_int,
        default=ProxySettings.prefix_chars,
        help="leading prompt characters hashed by the prefix routing policy",
    )
    p.add_argument(
        "--prefix-load-factor",
        type=_positive_float,
        default=1 + ProxySettings.epsilon,
        help="prefix policy: a pod takes a key's request while its load is under this many "
        "times the mean (consistent hashing with bounded loads); must be > 1",
    )
    p.add_argument(
        "--scrape-interval",
        type=_positive_float,
        default=GatewaySettings.scrape_interval,
        help="seconds between reads of each engine pod's /metrics (waiting requests, KV usage)",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=_positive_float,
        default=30.0,
        help="at SIGTERM, seconds open requests get to finish; then a stream ends with "
        "finish_reason abort and [DONE], a request not answered yet with 503",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        p.error("say where to look: --namespace NAME (repeatable) or --all-namespaces")
    if args.prefix_load_factor <= 1:
        p.error("--prefix-load-factor must be > 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = GatewaySettings(
        namespaces=None if args.all_namespaces else args.namespace,
        max_body_bytes=args.max_body_bytes,
        queue_size=args.queue_size,
        queue_timeout=args.queue_timeout,
        scrape_interval=args.scrape_interval,
        drain_timeout=args.shutdown_timeout,
        proxy=ProxySettings(prefix_chars=args.prefix_chars, epsilon=args.prefix_load_factor - 1),
    )
    try:
        api = ApiServer()
    except kubernetes.config.ConfigException as e:
        print(
            f"pagoda gateway: no cluster credentials (not in a pod; KUBECONFIG: {e})",
            file=sys.stderr,
        )
        return 2
    app = build(settings, Registry(), api)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        shutdown_timeout=CUT_GRACE_S,  # the drain itself is the app's (app.py: shutdown)
        handler_cancellation=True,
        access_log=None,
        print=None,
    )
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
