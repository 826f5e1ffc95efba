"""The few apiserver calls the operator makes, on the kubernetes client's ApiClient.

Children are written with server-side apply (field manager pagoda-operator, forced): applying
the same object twice changes nothing, and a field someone edited by hand is taken back.
"""

from __future__ import annotations

from typing import Any, cast

import kopf
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException as ApiException  # re-exported

from pagoda.operator.children import Kind
from pagoda.operator.spec import FIELD_MANAGER, GROUP, PLURAL, VERSION


def _call(
    api: ApiClient,
    method: str,
    path: str,
    body: Any = None,
    query: list[tuple[str, str]] | None = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One request; the JSON answer as plain data. Raises ApiException on a non-2xx answer."""
    req = api.param_serialize(
        method=method,
        resource_path=path,
        query_params=query or [],
        body=body,
        header_params={"Content-Type": content_type, "Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    resp = api.call_api(*req[:4], _request_timeout=30)
    resp.read()
    # Its types take the map's values ("object") for the data's type: the data is the JSON itself.
    return cast(dict[str, Any], api.response_deserialize(resp, {"2XX": "object"}).data)


def apply(
    api: ApiClient, kind: Kind, obj: dict[str, Any], manager: str = FIELD_MANAGER
) -> dict[str, Any]:
    meta = obj["metadata"]
    return _call(
        api,
        "PATCH",
        kind.path(meta["namespace"], meta["name"]),
        obj,
        [("fieldManager", manager), ("force", "true")],
        "application/apply-patch+yaml",
    )


def get(api: ApiClient, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _call(api, "GET", kind.path(namespace, name))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def list_(api: ApiClient, kind: Kind, namespace: str, selector: str) -> list[dict[str, Any]]:
    found = _call(api, "GET", kind.path(namespace), query=[("labelSelector", selector)])
    items: list[dict[str, Any]] = found["items"]
    return items


def delete(api: ApiClient, kind: Kind, namespace: str, name: str) -> bool:
    """False if it was gone already."""
    try:
        _call(api, "DELETE", kind.path(namespace, name), {"propagationPolicy": "Background"})
    except ApiException as e:
        if e.status != 404:
            raise
        return False
    return True


def scale(api: ApiClient, namespace: str, name: str, replicas: int) -> None:
    _call(
        api,
        "PATCH",
        f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
        {"spec": {"replicas": replicas}},
        [("fieldManager", FIELD_MANAGER)],
        "application/merge-patch+json",
    )


def isvc_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def get_isvc(api: ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return _call(api, "GET", isvc_path(namespace, name))
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def patch_status(
    api: ApiClient,
    namespace: str,
    name: str,
    status: dict[str, Any],
    resource_version: str | None = None,
) -> None:
    """A merge patch of the status; with `resource_version`, only if the object is still at it
    (409 otherwise): a write decided from a cached copy never overwrites a newer one."""
    body: dict[str, Any] = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    _call(
        api,
        "PATCH",
        isvc_path(namespace, name) + "/status",
        body,
        content_type="application/merge-patch+json",
    )


def served(api: ApiClient, api_version: str) -> bool:
    """Whether the apiserver serves this group/version (discovery needs no RBAC)."""
    try:
        _call(api, "GET", f"/apis/{api_version}")
        return True
    except ApiException as e:
        if e.status == 404:
            return False
        raise


def event(obj: dict[str, Any], type: str, reason: str, message: str) -> None:
    """kopf.event for an object read through this module (kopf types it as its Body: a view of the
    same JSON, read the same way)."""
    kopf.event(kopf.Body(cast(kopf.RawBody, obj)), type=type, reason=reason, message=message)
