"""The CRD's shape: names, subresources, printer columns, and the rules the apiserver enforces."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CRD = yaml.safe_load((ROOT / "crds" / "inferenceservice.yaml").read_text())
VERSION = CRD["spec"]["versions"][0]


def test_names():
    assert CRD["metadata"]["name"] == "inferenceservices.pagoda.dev"
    names = CRD["spec"]["names"]
    assert names["kind"] == "InferenceService" and names["plural"] == "inferenceservices"
    assert "isvc" not in names["shortNames"]  # KServe's
    assert CRD["spec"]["scope"] == "Namespaced" and VERSION["name"] == "v1alpha1"


def test_subresources():
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }


def test_printer_columns():
    cols = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    for name in ("Ready", "Replicas", "Model", "URL", "KV", "Age"):
        assert name in cols
    assert cols["KV"] == ".status.metrics.kvCacheUsage"


def test_status_schema_covers_what_the_operator_writes():
    status = VERSION["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for key in (
        "observedGeneration",
        "url",
        "replicas",
        "readyReplicas",
        "desiredReplicas",
        "selector",
        "replicasOwner",
        "conditions",
        "rollout",
        "metrics",
        "lastScaleTime",
        "lora",
    ):
        assert key in status


def test_engine_enums_are_the_engines_own():
    """engine.quantization and kvCacheDtype take exactly what the engine's flags take."""
    from pagoda.engine.quantization import SUPPORTED

    engine = VERSION["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["engine"]
    assert engine["properties"]["quantization"]["enum"] == list(SUPPORTED)
