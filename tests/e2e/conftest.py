"""The e2e tier runs against whatever cluster KUBECONFIG names: the local single node of
e2e/up.sh (`source /var/lib/pagoda-e2e/env`), a kind cluster (e2e/kind/up.sh, see e2e/README.md), or any other.

Needs: KUBECONFIG; PAGODA_E2E_INGRESS_URL (where the cluster's ingress controller answers,
e.g. http://127.0.0.1:30080); the images already in the node's runtime (images/build.sh --load,
or `kind load docker-image`): PAGODA_E2E_OPERATOR_IMAGE, PAGODA_E2E_ENGINE_IMAGE (defaults:
pagoda-operator:<appVersion>, pagoda-engine:<appVersion>). Nothing is skipped: a missing
cluster fails, with the reason.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
from e2e_cluster import Cluster


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kc = os.environ.get("KUBECONFIG")
    if not kc or not all(Path(p).exists() for p in kc.split(os.pathsep)):
        pytest.fail(
            "e2e: KUBECONFIG names no cluster. Bring one up with `e2e/up.sh && source "
            "/var/lib/pagoda-e2e/env` (or see e2e/README.md for kind), or run e2e/run.sh.",
            pytrace=False,
        )
    url = os.environ.get("PAGODA_E2E_INGRESS_URL")
    if not url:
        pytest.fail(
            "e2e: PAGODA_E2E_INGRESS_URL is not set (where the ingress controller answers; "
            "e2e/up.sh writes it into /var/lib/pagoda-e2e/env)",
            pytrace=False,
        )
    for tool in ("kubectl", "helm"):
        if shutil.which(tool) is None:
            pytest.fail(
                f"e2e: `{tool}` is not on PATH (e2e/cluster/build.sh builds it; "
                f"/var/lib/pagoda-e2e/env puts it on PATH)",
                pytrace=False,
            )
    c = Cluster(kc, url)
    c.kubectl("version")  # reachable at all?
    return c


@pytest.fixture(scope="module")
def operator(cluster: Cluster):
    """The chart, installed for one test module (`helm uninstall` keeps its CRD, and so every
    InferenceService left)."""
    cluster.install_operator()
    yield
    cluster.uninstall_operator()


@pytest.fixture(scope="module")
def ns(cluster: Cluster):
    """A namespace for one test module, deleted after it (without waiting)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
