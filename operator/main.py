"""`pagoda operator`: run the InferenceService operator (kopf) with Pagoda's defaults.

Several replicas are safe: they peer through kopf's KopfPeering objects (crds/kopf-peering.yaml)
and each takes a random priority, so exactly one acts; when it dies its peering record expires
and the next one takes over. `--standalone` turns peering off (one replica, or tests).
"""

from __future__ import annotations

import argparse
import logging
import os
import random


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pagoda operator", description=__doc__.splitlines()[0])
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch this namespace (repeat for several; globs like 'team-*' work)",
    )
    scope.add_argument(
        "--all-namespaces", "-A", action="store_true", help="watch the whole cluster"
    )
    p.add_argument(
        "--engine-image",
        default=None,
        help="default CUDA engine image (env PAGODA_ENGINE_IMAGE); spec.engine.image overrides it",
    )
    p.add_argument(
        "--engine-cpu-image",
        default=None,
        help="default CPU engine image (env PAGODA_ENGINE_CPU_IMAGE), for specs without GPUs",
    )
    p.add_argument(
        "--metrics-port", type=int, default=8080, help="port of the operator's /metrics (0: off)"
    )
    p.add_argument(
        "--liveness-port", type=int, default=8081, help="port of kopf's /healthz (0: off)"
    )
    p.add_argument(
        "--observe-interval",
        type=float,
        default=None,
        help="seconds between scrapes of the engines' /metrics (env PAGODA_OBSERVE_INTERVAL, default 10)",
    )
    p.add_argument("--standalone", action="store_true", help="no peering: this is the only replica")
    p.add_argument(
        "--peering-name", default="pagoda-operator", help="peering object shared by the replicas"
    )
    p.add_argument("--priority", type=int, default=None, help="peering priority (default: random)")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        p.error("say where to watch: --namespace NAME (repeatable) or --all-namespaces")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Handlers read their settings at import: set them first.
    for flag, env in (
        (args.engine_image, "PAGODA_ENGINE_IMAGE"),
        (args.engine_cpu_image, "PAGODA_ENGINE_CPU_IMAGE"),
        (args.observe_interval, "PAGODA_OBSERVE_INTERVAL"),
    ):
        if flag is not None:
            os.environ[env] = str(flag)
    import kopf
    from prometheus_client import start_http_server

    import pagoda.operator.handlers  # noqa: F401  (registers the handlers)

    if args.metrics_port:
        start_http_server(args.metrics_port)
    # kopf makes peering mandatory whenever a peering name is given, even with standalone=True.
    peering = (
        {}
        if args.standalone
        else {
            "peering_name": args.peering_name,
            "priority": args.priority if args.priority is not None else random.randrange(1, 2**31),
        }
    )
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=args.standalone,
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz"
        if args.liveness_port
        else None,
        **peering,
    )
    return 0
