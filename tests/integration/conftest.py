"""Fixtures for the integration tier.

`kube`: a real Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, upstream binaries built by e2e/cluster/build.sh) started once per test session
on free loopback ports. It yields an `e2e.controlplane.ControlPlane` with `.kubeconfig` (path),
`.server` (URL) and `.kubectl(*args)`; for the session it also sets KUBECONFIG and puts the
pinned kubectl/helm first on PATH. No node joins: pods stay Pending (no kubelet).

`kube_ns`: a fresh namespace for one test, deleted afterwards.

`s3`: a real S3 server, versitygw (built by e2e/cluster/build.sh) over a temporary folder, on a
free loopback port; an `S3Server` with the endpoint, its root key pair and the folder (a bucket is
a folder in it).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from process_harness import LoggedProcess, free_port, wait_for

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
def kube_ns(kube):
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str
    root: Path  # root/BUCKET/KEY is the object KEY of BUCKET


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    cpmod = _controlplane_module()
    try:
        binary = cpmod.binary("versitygw")
    except cpmod.MissingBinaries as e:
        pytest.fail(f"s3 fixture: {e}", pytrace=False)
    root = tmp_path_factory.mktemp("s3")
    (root / "data").mkdir()
    port = free_port()
    server = S3Server(
        f"http://127.0.0.1:{port}", "pagoda-test", "pagoda-test-secret", root / "data"
    )
    proc = LoggedProcess(
        "versitygw",
        [binary, "--access", server.access_key, "--secret", server.secret_key]
        + ["--port", f"127.0.0.1:{port}", "--quiet", "posix", str(server.root)],
        root / "versitygw.log",
    )
    try:
        wait_for("versitygw to listen", lambda: _listening(port), process=proc)
        yield server
    finally:
        proc.stop()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
