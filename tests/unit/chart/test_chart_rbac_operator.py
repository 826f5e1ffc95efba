"""The chart's RBAC grants every call the operator's code makes: a new child kind, or a new verb
on one, fails here before it fails in a cluster with 403."""

from __future__ import annotations

import pytest
from chart_render import by_kind, render

from pagoda.operator.children import KINDS
from pagoda.operator.handlers import ISVC, POD, WATCHED

SCOPES = {"cluster": [], "namespaces": ["--set", "watch.scope=namespaces"]}


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def needed() -> list[tuple[str, str, set[str]]]:
    group, _, plural = ISVC
    calls = [
        (group, plural, {"get", "list", "watch", "patch"}),
        (group, f"{plural}/status", {"patch"}),
        ("apps", "deployments/scale", {"patch"}),
        (group_of(POD.api_version), POD.plural, {"list", "watch"}),  # kopf's index of pods
        ("", "events", {"create"}),
    ]
    # kube.apply (server-side apply), kube.get, kube.list_ (pruning the unwatched kinds; kopf's
    # watches list the others), kube.delete on every child kind.
    calls += [
        (group_of(k.api_version), k.plural, {"get", "list", "patch", "delete"}) for k in KINDS
    ]
    # kopf.on.event watches on the children whose edits are undone.
    calls += [(group_of(k.api_version), k.plural, {"list", "watch"}) for k in WATCHED]
    return calls


@pytest.mark.parametrize("extra", SCOPES.values(), ids=SCOPES.keys())
def test_rbac_grants_every_operator_call(helm, extra):
    objs = render(helm, *extra)
    # Namespaced rules sit in the ClusterRole (cluster scope) or in each Role (namespaces scope).
    holders = by_kind(objs, "Role") or by_kind(objs, "ClusterRole")
    for role in holders:
        for group, resource, verbs in needed():
            granted = set().union(
                *(
                    set(r["verbs"])
                    for r in role["rules"]
                    if group in r["apiGroups"] and resource in r["resources"]
                )
            )
            assert verbs <= granted, (
                f"{role['kind']} lacks {sorted(verbs - granted)} on {group}/{resource}"
            )
