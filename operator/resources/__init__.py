"""spec -> desired child objects, as plain dicts ready for server-side apply.

Every function here is pure: same spec, same objects. Owner references are added by the
handlers (they need the live object's uid), so these stay testable without a cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pagoda.operator.spec import SELECTOR_LABEL, Spec


def labels(s: Spec) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "pagoda-engine",
        "app.kubernetes.io/instance": s.name,
        "app.kubernetes.io/managed-by": "pagoda-operator",
        SELECTOR_LABEL: s.name,
    }


def metadata(s: Spec, name: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or s.name, "namespace": s.namespace, "labels": labels(s), **extra}


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able value (pod template revisions, config hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]
