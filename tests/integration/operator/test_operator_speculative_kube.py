"""engine.speculativeConfig against a real kube-apiserver: the CEL rules' messages for what the
engine would refuse at start, and the accepted forms (server-side dry run)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

NGRAM = {"method": "ngram", "numSpeculativeTokens": 4}
DRAFT = {"method": "draft_model", "numSpeculativeTokens": 4, "model": "/models/draft"}
INVALID = [
    (
        {"method": "draft_model", "numSpeculativeTokens": 4},
        "engine.speculativeConfig.model (the draft) is required for method draft_model",
    ),
    (
        {**NGRAM, "model": "/models/draft"},
        "engine.speculativeConfig.model is for method draft_model",
    ),
    (
        {**DRAFT, "promptLookupMax": 3},
        "engine.speculativeConfig.promptLookupMin/promptLookupMax are for method ngram",
    ),
    (
        {**NGRAM, "promptLookupMin": 4, "promptLookupMax": 2},
        "engine.speculativeConfig.promptLookupMin must be <= promptLookupMax",
    ),
    ({"method": "eagle", "numSpeculativeTokens": 4}, 'Unsupported value: "eagle"'),
    ({**NGRAM, "numSpeculativeTokens": 0}, "spec.engine.speculativeConfig.numSpeculativeTokens"),
    ({**NGRAM, "numSpeculativeTokens": 17}, "spec.engine.speculativeConfig.numSpeculativeTokens"),
    ({"method": "ngram"}, "spec.engine.speculativeConfig.numSpeculativeTokens: Required value"),
]
WITH_ENGINE = [
    (
        {"speculativeConfig": NGRAM, "asyncScheduling": True},
        "engine.speculativeConfig does not combine with engine.asyncScheduling",
    ),
    (
        {"speculativeConfig": NGRAM, "tensorParallelSize": 2},
        "engine.speculativeConfig needs tensorParallelSize and pipelineParallelSize 1",
    ),
]


def create(kube, namespace: str, engine: dict, *flags: str):
    doc = {
        "apiVersion": "pagoda.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "spec", "namespace": namespace},
        "spec": {"model": {"uri": "default"}, "engine": engine},
    }
    return kube.kubectl("create", *flags, "-f", "-", input=json.dumps(doc), check=False)


@pytest.mark.parametrize(
    "engine, message",
    [({"speculativeConfig": c}, m) for c, m in INVALID] + WITH_ENGINE,
    ids=[m[:48] for _, m in INVALID + WITH_ENGINE],
)
def test_invalid_speculative_config_is_rejected_with_the_message(
    kube, isvc_crd, kube_ns, engine, message
):
    out = create(kube, kube_ns, engine, "--dry-run=server")
    assert out.returncode != 0
    assert message in out.stderr, out.stderr


@pytest.mark.parametrize(
    "config",
    [
        NGRAM,
        {**NGRAM, "promptLookupMin": 2, "promptLookupMax": 4},
        {**NGRAM, "promptLookupMax": 3},
        DRAFT,
    ],
)
def test_valid_speculative_configs_are_accepted(kube, isvc_crd, kube_ns, config):
    out = create(kube, kube_ns, {"speculativeConfig": config}, "--dry-run=server")
    assert out.returncode == 0, out.stderr
