"""Strategic merge of a pod template patch (spec.pod.template) over the rendered template.

Kubernetes' rules for the fields a pod template has: objects merge key by key, null deletes a key,
lists of named things merge item by item on their merge key (an item with `$patch: delete` goes),
every other list is replaced whole.
"""

from __future__ import annotations

from typing import Any

# The merge key of each list field of a pod template that Kubernetes merges item by item.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}


def strategic_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = strategic_merge(out[key], value)
        elif isinstance(value, list) and key in MERGE_KEYS and isinstance(out.get(key), list):
            out[key] = _merge_list(out[key], value, MERGE_KEYS[key])
        else:
            out[key] = value
    return out


def _merge_list(base: list[Any], patch: list[Any], key: str) -> list[Any]:
    out = list(base)
    for item in patch:
        at = next((i for i, b in enumerate(out) if b.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if at is not None:
                del out[at]
        elif at is None:
            out.append(item)
        else:
            out[at] = strategic_merge(out[at], item)
    return out
