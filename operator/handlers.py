"""kopf handlers: small, one concern each; the work is in reconcile.py and observe.py.

Run with `pagoda operator` (main.py), or `kopf run -m pagoda.operator.handlers`.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import kopf
import kubernetes

from pagoda.operator import locks, logs, lora_sync, metrics, reconcile
from pagoda.operator.children import (
    DEPLOYMENT,
    KINDS,
    OPTIONAL,
    Child,
    Kind,
    child_of,
    edited_by_others,
    owner_of,
)
from pagoda.operator.config import CONFIG
from pagoda.operator.observe import ObjectState, deployment_facts, is_ready, observe, pod_facts
from pagoda.operator.resources.leaderworkerset import ROLE_LABEL
from pagoda.operator.spec import GROUP, PLURAL, SELECTOR_LABEL, VERSION, WAKE_ANNOTATION

ISVC = (GROUP, VERSION, PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "pagoda-operator"}
POD = Kind("v1", "Pod", "pods")
# Every child's edits and deletions are watched and undone, but ServiceMonitors' and
# LeaderWorkerSets': they come back on the next reconcile (watching them would need their CRDs
# installed).
WATCHED = [k for k in KINDS if k not in OPTIONAL]


def _resource(kind: Kind) -> tuple[str, str, str]:
    group, _, version = kind.api_version.rpartition("/")
    return group, version, kind.plural


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own readers: they look at KUBECONFIG when called, not when a client library was imported.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


# Threads for the kubernetes client's calls (asyncio.to_thread), and as many connections: they
# wait on the apiserver, not on the CPU. asyncio's default pool (CPUs + 4: 6 on 2 cores) queued
# 200 creates behind each other for seconds, and a Service's apply waits ~1 s in the apiserver
# under such a burst (its ClusterIP allocation), holding a thread (docs/performance.md).
API_THREADS = 64


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations, not status: the status schema is ours alone.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="pagoda.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="pagoda.dev", key="last-handled-configuration"
    )
    # kopf's timers need a finalizer (to stop before the object goes): name it after us.
    settings.persistence.finalizer = "pagoda.dev/operator"
    # Our actions are Events (kopf.event, posted whatever the level); kopf's own per-handler
    # chatter would be an Event on every child change: only its warnings and errors are.
    settings.posting.level = logging.WARNING
    # Watches end server-side before any proxy or load balancer cuts them silently.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 16
    logs.quiet_routine()
    # Pods and children: only ours, filtered by the apiserver, not after the fact in this process.
    for kind in (*WATCHED, POD):
        settings.watching.label_selectors[_resource(kind)] = ",".join(
            f"{k}={v}" for k, v in MANAGED.items()
        )
    # A timer caught mid-tick by a deletion is looked at again in 1 s, not kopf's default 60 s
    # (the finalizer, and so the delete, waits for it).
    settings.background.cancellation_polling = 1.0
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # Read KUBECONFIG now: the client's own default was fixed when it was imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    locks.reset()
    reconcile.reset()
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS, "kube"))
    api_config = kubernetes.client.Configuration.get_default_copy()
    api_config.connection_pool_maxsize = API_THREADS
    memo.api = kubernetes.client.ApiClient(api_config)
    memo.http = httpx.AsyncClient(timeout=httpx.Timeout(3.0))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.http.aclose()
    memo.api.close()


# kopf types a handler's `namespace` as str | None (for cluster-scoped objects): ours are namespaced,
# hence the ignores on the innermost decorators.
@kopf.on.resume(*ISVC, backoff=15)
@kopf.on.create(*ISVC, backoff=15)
@kopf.on.update(*ISVC, backoff=15)  # type: ignore[arg-type]
async def reconcile_isvc(
    name: str,
    namespace: str,
    memo: kopf.Memo,
    owned_children: kopf.Index[tuple[str, str], Child],
    **_: Any,
) -> None:
    await reconcile.reconcile(memo.api, namespace, name, owned_children)


# The indexers are coroutines: kopf runs a plain function in its thread pool, a hop for every watch
# event of every pod and child.
@kopf.index(*ISVC)  # type: ignore[arg-type]
async def isvc_alive(namespace: str, name: str, meta: kopf.Meta, **_: Any) -> dict[Any, bool]:
    """Whether each InferenceService is alive (not being deleted): a child's event for an owner
    gone or going is the garbage collector at work, nothing to reconcile."""
    return {(namespace, name): meta.get("deletionTimestamp") is None}


@kopf.index(*_resource(POD), labels=MANAGED)  # type: ignore[arg-type]
async def engine_pods(
    namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]] | None:
    owner = labels.get(SELECTOR_LABEL)
    # A multi-node engine's workers serve no HTTP: the looks at pods take its leaders only.
    if not owner or labels.get(ROLE_LABEL) == "worker":
        return None
    return {(namespace, owner): pod_facts(dict(body))}


@kopf.index(*_resource(DEPLOYMENT), labels=MANAGED)  # type: ignore[arg-type]
async def engine_deployments(
    namespace: str, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], dict[str, Any]] | None:
    owner = labels.get(SELECTOR_LABEL)
    return {(namespace, owner): deployment_facts(dict(body))} if owner else None


@kopf.on.delete(*ISVC, optional=True)  # type: ignore[arg-type]
def forget_isvc(name: str, namespace: str, logger: logging.Logger, **_: Any) -> None:
    # Children go with the owner through the garbage collector; only our own bookkeeping stays.
    metrics.forget(namespace, name)
    reconcile.forget(namespace, name)
    locks.forget(namespace, name)
    locks.forget(namespace, f"{name}/lora")
    logger.info("children are left to the garbage collector")


@kopf.timer(*ISVC, interval=CONFIG.observe_interval, initial_delay=CONFIG.observe_interval)  # type: ignore[arg-type]
async def observe_isvc(
    name: str,
    namespace: str,
    body: kopf.Body,
    memo: kopf.Memo,
    engine_pods: kopf.Index[tuple[str, str], dict[str, Any]],
    engine_deployments: kopf.Index[tuple[str, str], dict[str, Any]],
    owned_children: kopf.Index[tuple[str, str], Child],
    **_: Any,
) -> None:
    await look(name, namespace, body, memo, engine_pods, engine_deployments, owned_children)


async def look(
    name: str,
    namespace: str,
    body: kopf.Body,
    memo: kopf.Memo,
    engine_pods: kopf.Index[tuple[str, str], dict[str, Any]],
    engine_deployments: kopf.Index[tuple[str, str], dict[str, Any]],
    owned_children: kopf.Index[tuple[str, str], Child],
) -> None:
    """One look at an InferenceService (observe.py), from what kopf's watches hold."""
    if "state" not in memo:
        memo.state = ObjectState()
    key = (namespace, name)
    # Copies: kopf updates the body and the indexes in place as watch events arrive.
    pods = [copy.deepcopy(p) for p in engine_pods.get(key, [])]
    deploy = next((copy.deepcopy(d) for d in engine_deployments.get(key, [])), None)
    children = list(owned_children.get(key, []))  # frozen records: a list of them is a copy
    body_copy = copy.deepcopy(dict(body))
    await observe(memo.api, memo.http, memo.state, body_copy, pods, deploy, children)


@kopf.on.update(*ISVC, field=("metadata", "annotations", WAKE_ANNOTATION))  # type: ignore[arg-type]
async def wake_isvc(
    name: str,
    namespace: str,
    body: kopf.Body,
    memo: kopf.Memo,
    engine_pods: kopf.Index[tuple[str, str], dict[str, Any]],
    engine_deployments: kopf.Index[tuple[str, str], dict[str, Any]],
    owned_children: kopf.Index[tuple[str, str], Child],
    **_: Any,
) -> None:
    # The gateway holds a request for a model scaled to zero: look now, not at the next tick.
    await look(name, namespace, body, memo, engine_pods, engine_deployments, owned_children)


def _has_lora(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return "lora" in spec or "lora" in status  # the status is cleared once after lora goes


@kopf.timer(*ISVC, interval=CONFIG.observe_interval, when=_has_lora, id="lora-tick")  # type: ignore[arg-type]
@kopf.on.update(*ISVC, field="spec.lora", id="lora-change")  # type: ignore[arg-type]
async def sync_lora(
    name: str,
    namespace: str,
    body: kopf.Body,
    memo: kopf.Memo,
    engine_pods: kopf.Index[tuple[str, str], dict[str, Any]],
    **_: Any,
) -> None:
    """Each ready pod's adapters to spec.lora: on a change at once, and every tick (pods that
    became ready, restarted, or failed a load)."""
    if body["metadata"].get("deletionTimestamp"):
        return
    # Its own lock (a load may take minutes, the reconcile's lock must not wait on it): the tick
    # and the change handler never load the same adapter twice at once.
    async with locks.lock(namespace, f"{name}/lora"):
        ips = {
            p["metadata"]["name"]: p["status"]["podIP"]
            for p in engine_pods.get((namespace, name), [])
            if is_ready(p)
        }
        await lora_sync.sync(memo.api, memo.http, copy.deepcopy(dict(body)), ips)


async def owned_children(
    namespace: str, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], Child] | None:
    """The children by owner, one index over every watched kind (registered below): what a
    reconcile prunes or calls new, without a LIST per kind (reconcile.py)."""
    child = child_of(dict(body))
    owner = owner_of(body["metadata"])
    return {(namespace, owner): child} if child and owner else None


def _register_child_watch(kind: Kind) -> None:
    kopf.index(*_resource(kind), labels=MANAGED, id="owned_children")(owned_children)  # type: ignore[arg-type]

    @kopf.on.event(*_resource(kind), labels=MANAGED, id=f"child-{kind.plural}")  # type: ignore[arg-type]
    async def child_changed(
        type: str | None,
        body: kopf.Body,
        namespace: str,
        memo: kopf.Memo,
        isvc_alive: kopf.Index[tuple[str, str], bool],
        owned_children: kopf.Index[tuple[str, str], Child],
        **_: Any,
    ) -> None:
        # None is the initial listing (resume handlers cover it); ADDED is our own creation; status
        # changes reach the InferenceService's status through the observe timer.
        owner = owner_of(body["metadata"])
        if (
            owner
            and any(isvc_alive.get((namespace, owner), ()))
            and (type == "DELETED" or (type == "MODIFIED" and edited_by_others(body["metadata"])))
        ):
            await reconcile.reconcile(memo.api, namespace, owner, owned_children)


for _kind in WATCHED:
    _register_child_watch(_kind)
