"""kopf handlers: small, one concern each; the work is in reconcile.py and observe.py.

Run with `pagoda operator` (main.py), or `kopf run -m pagoda.operator.handlers`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import httpx
import kopf
import kubernetes

from pagoda.operator import metrics
from pagoda.operator.children import edited_by_others, owner_of
from pagoda.operator.config import CONFIG
from pagoda.operator.observe import ObjectState, observe
from pagoda.operator.reconcile import LOCKS, reconcile
from pagoda.operator.spec import GROUP, PLURAL, VERSION, WAKE_ANNOTATION

ISVC = (GROUP, VERSION, PLURAL)
MANAGED = {"app.kubernetes.io/managed-by": "pagoda-operator"}
# Children whose edits and deletions are watched and undone (ServiceMonitors come back on the
# next reconcile: watching them would need their CRD installed).
CHILDREN = [
    ("", "v1", "configmaps"),
    ("", "v1", "services"),
    ("apps", "v1", "deployments"),
    ("networking.k8s.io", "v1", "ingresses"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
]


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    # kopf's own readers: they look at KUBECONFIG when called, not when a client library was imported.
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # Read KUBECONFIG now: the client's own default was fixed when it was imported.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))
    LOCKS.clear()  # asyncio locks belong to one event loop: a second run in this process starts afresh
    memo.api = kubernetes.client.ApiClient()
    memo.http = httpx.AsyncClient(timeout=httpx.Timeout(3.0))


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    await memo.http.aclose()
    memo.api.close()


@kopf.on.resume(*ISVC, backoff=15)
@kopf.on.create(*ISVC, backoff=15)
@kopf.on.update(*ISVC, backoff=15)
async def reconcile_isvc(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    await reconcile(memo.api, namespace, name)


@kopf.on.delete(*ISVC, optional=True)
def forget_isvc(name: str, namespace: str, logger: logging.Logger, **_: Any) -> None:
    # Children go with the owner through the garbage collector; only our own bookkeeping stays.
    metrics.forget(namespace, name)
    LOCKS.pop((namespace, name), None)
    logger.info("children are left to the garbage collector")


@kopf.timer(*ISVC, interval=CONFIG.observe_interval, initial_delay=CONFIG.observe_interval)
async def observe_isvc(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    if "state" not in memo:
        memo.state = ObjectState()
    await observe(memo.api, memo.http, memo.state, namespace, name)


@kopf.on.update(*ISVC, field=("metadata", "annotations", WAKE_ANNOTATION))
async def wake_isvc(name: str, namespace: str, memo: kopf.Memo, **_: Any) -> None:
    # The gateway holds a request for a model scaled to zero: look now, not at the next tick.
    if "state" not in memo:
        memo.state = ObjectState()
    await observe(memo.api, memo.http, memo.state, namespace, name)


def _register_child_watch(group: str, version: str, plural: str) -> None:
    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"child-{plural}")
    async def child_changed(
        type: str | None, body: kopf.Body, namespace: str, memo: kopf.Memo, **_: Any
    ) -> None:
        # None is the initial listing (resume handlers cover it); ADDED is our own creation; status
        # changes reach the InferenceService's status through the observe timer.
        owner = owner_of(body["metadata"])
        if owner and (
            type == "DELETED" or type == "MODIFIED" and edited_by_others(body["metadata"])
        ):
            await reconcile(memo.api, namespace, owner)


for _child in CHILDREN:
    _register_child_watch(*_child)
