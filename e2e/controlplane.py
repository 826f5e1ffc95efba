"""A real Kubernetes control plane as local processes: etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, built by e2e/cluster/build.sh from their upstream
Go modules. Standard library only (plus the `openssl` command for certificates).

    from e2e.controlplane import ControlPlane
    with ControlPlane() as cp:          # starts in a few seconds
        subprocess.run(["kubectl", "--kubeconfig", cp.kubeconfig, "get", "ns"])

or from a shell (runs until SIGTERM/SIGINT, prints the kubeconfig path):
    python3 e2e/controlplane.py --dir /tmp/cp [--bind-address 10.244.0.1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "cluster" / "versions.env"
SERVICE_CIDR = "10.96.0.0/16"
CLUSTER_CIDR = "10.244.0.0/16"
FRONT_PROXY_CLIENT = "front-proxy-client"  # the CN extension apiservers accept proxied calls from


class MissingBinaries(RuntimeError):
    pass


def versions() -> dict[str, str]:
    out = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("PAGODA_CACHE", Path.home() / ".cache" / "pagoda"))


def bin_dirs() -> dict[str, Path]:
    """Where build.sh puts each binary."""
    v, b = versions(), cache_dir() / "bin"
    k8s = b / f"k8s-{v['K8S_VERSION']}"
    dirs = {
        n: k8s
        for n in (
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubectl",
            "kubelet",
            "kube-proxy",
        )
    }
    dirs.update(
        etcd=b / f"etcd-{v['ETCD_VERSION']}",
        helm=b / f"helm-{v['HELM_VERSION']}",
        traefik=b / f"traefik-{v['TRAEFIK_VERSION']}",
        kind=b / f"kind-{v['KIND_VERSION']}",
        versitygw=b / f"versitygw-{v['VERSITYGW_VERSION']}",
    )
    dirs["prometheus-adapter"] = b / f"prometheus-adapter-{v['PROMETHEUS_ADAPTER_VERSION']}"
    dirs["lws-controller"] = b / f"lws-{v['LWS_VERSION']}"  # its CRD, crd.yaml, lies beside it
    return dirs


def binary(name: str) -> str:
    path = bin_dirs()[name] / name
    if not os.access(path, os.X_OK):
        raise MissingBinaries(
            f"{path} is missing: build the cluster binaries first with `bash e2e/cluster/build.sh` "
            "(a tier's: `bash e2e/cluster/ci-setup.sh integration` or `e2e`, prometheus-adapter "
            f"with the e2e tier's; one-time, cached under {cache_dir()}/bin; ~20 min fresh on 2 "
            "cores)"
        )
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def make_ca(d: Path, name: str, cn: str) -> None:
    _openssl("req", "-x509", *EC, "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "3650", "-subj", f"/CN={cn}", cwd=d)  # fmt: skip


def make_cert(d: Path, ca: str, name: str, subj: str, ext: str) -> None:
    """`name`.crt/.key signed by the CA `ca`.crt/.key in `d`; `ext`: x509v3 extension lines."""
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl("req", "-new", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subj, cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "3650", "-extfile", f"{name}.ext",
             "-out", f"{name}.crt", cwd=d)  # fmt: skip


def make_pki(d: Path, ips: list[str]) -> None:
    """CA, apiserver serving cert, admin client cert (system:masters), service-account keys, and
    the aggregation layer's front-proxy CA with the client cert the apiserver proxies to
    extension apiservers with (a CA of its own, as kubeadm makes: a client cert of the main CA
    must not be able to assert any user through the request headers).
    EC P-256 keys: fast to make, accepted everywhere in Kubernetes."""
    if shutil.which("openssl") is None:
        raise MissingBinaries("the `openssl` command is needed (apt-get install openssl)")
    d.mkdir(parents=True, exist_ok=True)
    make_ca(d, "ca", "pagoda-test-ca")
    sans = ",".join(
        [f"IP:{ip}" for ip in ips]
        + [
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ]
    )
    make_cert(d, "ca", "apiserver", "/CN=kube-apiserver",
              f"subjectAltName={sans}\nextendedKeyUsage=serverAuth")  # fmt: skip
    make_cert(d, "ca", "admin", "/O=system:masters/CN=pagoda-admin", "extendedKeyUsage=clientAuth")
    make_ca(d, "front-proxy-ca", "pagoda-front-proxy-ca")
    make_cert(d, "front-proxy-ca", FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}",
              "extendedKeyUsage=clientAuth")  # fmt: skip
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key", cwd=d)
    _openssl("ec", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=d)


def write_kubeconfig(path: Path, server: str, pki: Path) -> None:
    # JSON is valid YAML; absolute paths to the certificates.
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "pagoda",
        "clusters": [
            {
                "name": "pagoda",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki / "admin.crt"),
                    "client-key": str(pki / "admin.key"),
                },
            }
        ],
        "contexts": [{"name": "pagoda", "context": {"cluster": "pagoda", "user": "admin"}}],
    }
    path.write_text(json.dumps(cfg, indent=1) + "\n")


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler on free ports.

    bind_address: where the apiserver listens and what it advertises (127.0.0.1 for
    integration tests; an address pods can reach when a kubelet joins, see e2e/up.sh)."""

    def __init__(
        self,
        workdir: str | os.PathLike | None = None,
        bind_address: str = "127.0.0.1",
        apiserver_port: int | None = None,
        scheduler: bool = True,
        apiserver_args: Sequence[str] = (),
    ):
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="pagoda-cp-"))
        self.bind = bind_address
        self.port = apiserver_port or free_port(bind_address)
        self.server = f"https://{bind_address}:{self.port}"
        self.pki = self.dir / "pki"
        self.kubeconfig = str(self.dir / "kubeconfig")
        self.logs = self.dir / "logs"
        self.with_scheduler = scheduler
        self.apiserver_args = list(apiserver_args)  # more kube-apiserver flags (an audit log)
        self.procs: dict[str, subprocess.Popen] = {}
        self.bins = {
            n: binary(n)
            for n in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
        }

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 (the child's for its life)
        self.procs[name] = subprocess.Popen(
            [self.bins[name], *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def _tail(self, name: str, n: int = 25) -> str:
        try:
            return "\n".join(
                (self.logs / f"{name}.log").read_text(errors="replace").splitlines()[-n:]
            )
        except OSError:
            return ""

    def _get(self, port: int, path: str, host: str | None = None) -> tuple[int, bytes]:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        if port != self.port:  # kcm / scheduler serve self-signed certificates
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn = http.client.HTTPSConnection(host or "127.0.0.1", port, context=ctx, timeout=5)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def _wait(self, what: str, names: list[str], probe, deadline: float) -> None:
        while True:
            for n in names:
                p = self.procs[n]
                if p.poll() is not None:
                    raise RuntimeError(
                        f"{n} exited with {p.returncode} while waiting for {what}:\n{self._tail(n)}"
                    )
            try:
                if probe():
                    return
            except (OSError, http.client.HTTPException, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out waiting for {what}; logs in {self.logs}:\n"
                    + "\n".join(f"--- {n}\n{self._tail(n)}" for n in names)
                )
            time.sleep(0.1)

    def start(self, timeout: float = 90) -> ControlPlane:
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        ips = sorted({"127.0.0.1", self.bind, "10.96.0.1"})
        make_pki(self.pki, ips)
        write_kubeconfig(Path(self.kubeconfig), self.server, self.pki)
        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self._spawn(
            "etcd",
            [
                "--name=pagoda",
                f"--data-dir={self.dir / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=pagoda=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        pki = self.pki
        self._spawn(
            "kube-apiserver",
            [
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.bind}",
                f"--advertise-address={self.bind}",
                f"--secure-port={self.port}",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                # The aggregation layer: APIServices (a custom metrics adapter) are served by
                # proxying with the front-proxy client cert, the user in these headers.
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki / (FRONT_PROXY_CLIENT + '.crt')}",
                f"--proxy-client-key-file={pki / (FRONT_PROXY_CLIENT + '.key')}",
                # Route to an APIService's Service (its ClusterIP, or an ExternalName's host),
                # not to its endpoints: a loopback adapter can be no Endpoints address.
                "--enable-aggregator-routing=false",
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.apiserver_args,
            ],
        )
        self._wait(
            "kube-apiserver /readyz",
            ["etcd", "kube-apiserver"],
            lambda: self._get(self.port, "/readyz", self.bind)[0] == 200,
            deadline,
        )
        self.apiserver_ready_s = time.monotonic() - t0
        kcm_port, sched_port = free_port(), free_port()
        self._spawn(
            "kube-controller-manager",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={self.dir / 'kcm-certs'}",
                "--leader-elect=false",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-cidr={CLUSTER_CIDR}",
                "--allocate-node-cidrs=true",
                "--node-cidr-mask-size=24",
                "--use-service-account-credentials",
                "--controllers=*",
                "--profiling=false",
                "--v=1",
            ],
        )
        names = ["etcd", "kube-apiserver", "kube-controller-manager"]
        if self.with_scheduler:
            self._spawn(
                "kube-scheduler",
                [
                    f"--kubeconfig={self.kubeconfig}",
                    f"--authentication-kubeconfig={self.kubeconfig}",
                    f"--authorization-kubeconfig={self.kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={sched_port}",
                    f"--cert-dir={self.dir / 'scheduler-certs'}",
                    "--leader-elect=false",
                    "--v=1",
                ],
            )
            names.append("kube-scheduler")
            self._wait(
                "kube-scheduler /healthz",
                names,
                lambda: self._get(sched_port, "/healthz")[0] == 200,
                deadline,
            )
        self._wait(
            "kube-controller-manager /healthz",
            names,
            lambda: self._get(kcm_port, "/healthz")[0] == 200,
            deadline,
        )
        # The serviceaccount controller has run: pods can be created in `default`.
        self._wait(
            "the default ServiceAccount",
            names,
            lambda: (
                self._get(
                    self.port, "/api/v1/namespaces/default/serviceaccounts/default", self.bind
                )[0]
                == 200
            ),
            deadline,
        )
        self.startup_s = time.monotonic() - t0
        return self

    def stop(self, timeout: float = 15) -> None:
        for name in reversed(list(self.procs)):  # scheduler, kcm, apiserver, then etcd
            p = self.procs[name]
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        if self._own_dir and not os.environ.get("PAGODA_KEEP_CONTROLPLANE"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def kubectl(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            **kw,
        )

    def __enter__(self) -> ControlPlane:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dir", help="state directory (default: a new temp dir, removed at exit)")
    ap.add_argument("--bind-address", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None)
    a = ap.parse_args()
    if a.dir:
        shutil.rmtree(a.dir, ignore_errors=True)
    cp = ControlPlane(a.dir, bind_address=a.bind_address, apiserver_port=a.port)

    def on_term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        cp.start()
        print(
            f"control plane ready in {cp.startup_s:.1f}s (apiserver {cp.apiserver_ready_s:.1f}s); "
            f"KUBECONFIG={cp.kubeconfig}",
            flush=True,
        )
        while all(p.poll() is None for p in cp.procs.values()):
            time.sleep(1)
        dead = [n for n, p in cp.procs.items() if p.poll() is not None]
        print(f"control plane process exited: {dead}; logs in {cp.logs}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        cp.stop()


if __name__ == "__main__":
    main()
