"""Fixtures for the integration tier.

`kube`: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, upstream binaries built by e2e/cluster/build.sh) started once per test session
on free loopback ports. It yields an `e2e.controlplane.ControlPlane` with `.kubeconfig` (path),
`.server` (URL) and `.kubectl(*args)`; for the session it also sets KUBECONFIG and puts the
pinned kubectl/helm first on PATH. No node joins: pods stay Pending (no kubelet).

`kube_ns`: a fresh namespace for one test, deleted afterwards. `own_kube`: a control plane of
one test's own, for cluster-wide changes the shared one must not see.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _controlplane_module():
    spec = importlib.util.spec_from_file_location(
        "pagoda_e2e_controlplane", ROOT / "e2e" / "controlplane.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _started(cpmod, fixture: str):
    try:
        cp = cpmod.ControlPlane()
    except cpmod.MissingBinaries as e:
        # Never skip: a missing control plane is a failure of the setup, said plainly.
        pytest.fail(f"{fixture} fixture: {e}", pytrace=False)
    try:
        cp.start()
    except BaseException:
        cp.stop()
        raise
    return cp


@pytest.fixture(scope="session")
def kube():
    cpmod = _controlplane_module()
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    cp = _started(cpmod, "kube")
    bins = cpmod.bin_dirs()
    os.environ["KUBECONFIG"] = cp.kubeconfig
    os.environ["PATH"] = os.pathsep.join(
        [str(bins["kubectl"]), str(bins["helm"]), saved["PATH"] or ""]
    )
    try:
        yield cp
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        cp.stop()


@pytest.fixture
def own_kube():
    """A control plane for one test alone, for what must not touch the session's shared one: a
    CRD's whole life under Helm (the session's CRD is applied by kubectl, which Helm will not
    adopt). Same binaries; about 12 s to start. KUBECONFIG and PATH stay the session's."""
    cp = _started(_controlplane_module(), "own_kube")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kube_ns(kube):
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
