"""Every example InferenceService in crds/examples/ validates against the CRD's openAPIV3Schema.

The schema is checked as the apiserver would with strict field validation (kubectl's default):
unknown fields are errors. CEL rules (x-kubernetes-validations) need an apiserver and are
covered by the operator's apiserver tests.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_render import CRD, REPO

EXAMPLES = sorted((REPO / "crds" / "examples").glob("*.yaml"))
TOPOLOGIES = {
    "cpu-default.yaml",
    "single-gpu.yaml",
    "tensor-parallel.yaml",
    "ha-replicas.yaml",
    "multi-model-ingress.yaml",
}
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def structural_to_jsonschema(node: Any) -> Any:
    """A CRD's structural schema as JSON Schema (draft 4, which shares OpenAPI 3.0's boolean
    exclusiveMinimum): int-or-string spelled out, unknown fields rejected unless preserved."""
    if isinstance(node, list):
        return [structural_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: structural_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")
    }
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validator() -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    schema = structural_to_jsonschema(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def check(obj: dict[str, Any], validator: jsonschema.Draft4Validator) -> None:
    assert obj["apiVersion"] == "pagoda.dev/v1alpha1" and obj["kind"] == "InferenceService"
    meta = obj["metadata"]
    assert set(meta) <= {"name", "namespace", "labels", "annotations"}, meta
    assert DNS1123_SUBDOMAIN.match(meta["name"]) and len(meta["name"]) <= 50, meta["name"]
    errors = sorted(validator.iter_errors(obj), key=str)
    assert not errors, "; ".join(
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_topology_has_an_example():
    assert TOPOLOGIES <= {p.name for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_validates_against_the_crd(path):
    validator = crd_validator()
    objs = load(path)
    assert objs
    for obj in objs:
        check(obj, validator)


def test_multi_model_example_shares_one_host():
    objs = load(REPO / "crds" / "examples" / "multi-model-ingress.yaml")
    ingresses = [o["spec"]["exposure"]["ingress"] for o in objs]
    assert len(objs) >= 2 and len({i["host"] for i in ingresses}) == 1
    assert len({i["path"] for i in ingresses}) == len(objs)


BROKEN = {
    "unknown engine field": (("spec", "engine"), "maxNumSeq", 8),
    "gpu count zero": (("spec", "resources", "gpu"), "count", 0),
    "replicas as a string": (("spec",), "replicas", "3"),
    "memory as a list": (("spec", "resources"), "memory", ["32Gi"]),
    "dtype not in the enum": (("spec", "engine"), "dtype", "float8"),
    "gpu memory utilization zero": (("spec", "engine"), "gpuMemoryUtilization", 0),
}


@pytest.mark.parametrize("where,key,value", BROKEN.values(), ids=BROKEN.keys())
def test_validator_rejects_a_broken_example(where, key, value):
    obj = copy.deepcopy(load(REPO / "crds" / "examples" / "single-gpu.yaml")[0])
    node = obj
    for k in where:
        node = node[k]
    node[key] = value
    with pytest.raises(AssertionError):
        check(obj, crd_validator())
