"""End to end: Pod Security Admission's `restricted` profile (issue 21, security). An engine of
the default model runs in a namespace that enforces it, with the settings the profile asks for
in force in the running container, and answers through the Ingress; a privileged pod is refused
there. The chart's own pods (operator and gateway) pass the profile too: a server-side dry run of
labelling their namespace restricted names no violating pod (PSA checks the existing pods on such
a change), while the same dry run does name a privileged pod elsewhere."""

from __future__ import annotations

import json
import uuid

import pytest
from e2e_cluster import CHART, OPERATOR_NS, Cluster

pytestmark = pytest.mark.e2e

NAME, MODEL, HOST = "psa", "smollm2-psa", "psa.localtest.me"
PROFILE = "pod-security.kubernetes.io/enforce"
PRIVILEGED_POD = "psa-privileged"
# Read in the engine container: its process's uid, capabilities, no_new_privs and seccomp mode
# (the kernel's view), and the options of its root mount.
PROC_PROBE = """import json
status = dict(line.split(":", 1) for line in open("/proc/1/status") if ":" in line)
root = [line.split()[3].split(",") for line in open("/proc/1/mounts") if line.split()[1] == "/"]
keys = ("Uid", "CapEff", "CapBnd", "NoNewPrivs", "Seccomp")
print(json.dumps({**{k: status[k].split() for k in keys}, "root": root[-1]}))
"""


def namespace(name: str, level: str | None) -> dict:
    labels = {f"pod-security.kubernetes.io/{m}": level for m in ("enforce", "warn", "audit")}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels if level else {}},
    }


def delete_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "namespace", name, "--wait=true", "--timeout=240s", timeout=270)


@pytest.fixture(scope="module")
def chart(cluster: Cluster):
    """The chart with its gateway: every pod it makes must pass the profile."""
    cluster.install_operator(
        CHART, "gateway.enabled=true,gateway.replicaCount=1", "gateway.resources.requests.cpu=100m"
    )
    yield
    cluster.uninstall_operator()


@pytest.fixture(scope="module")
def restricted_ns(cluster: Cluster, chart):
    name = f"e2e-psa-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace(name, "restricted")))
    yield name
    delete_namespace(cluster, name)


def run_privileged(cluster: Cluster, ns: str):
    """`kubectl run` of a privileged pod; bound to no node, so that admitted it still never runs."""
    never = {"spec": {"nodeSelector": {"pagoda.dev/no-such-node": "true"}}}
    return cluster.kubectl(
        "run", PRIVILEGED_POD, "-n", ns, f"--image={cluster.engine_image}", "--restart=Never",
        "--privileged", f"--overrides={json.dumps(never)}", "--command", "--", "true",
        check=False,
    )  # fmt: skip


def test_a_privileged_pod_is_refused_in_the_restricted_namespace(cluster: Cluster, restricted_ns):
    out = run_privileged(cluster, restricted_ns)
    assert out.returncode != 0, f"a privileged pod was admitted under restricted: {out.stdout}"
    assert 'violates PodSecurity "restricted:latest"' in out.stderr, out.stderr
    assert "privileged" in out.stderr.split("restricted:latest", 1)[1], out.stderr


def test_an_engine_runs_and_answers_under_restricted(cluster: Cluster, restricted_ns):
    ns = restricted_ns
    isvc = cluster.default_model_isvc(
        ns,
        NAME,
        MODEL,
        engine={
            "maxNumSeqs": 1,
            "maxModelLen": 1024,
            "args": ["--kv-cache-memory-bytes", str(128 * 2**20)],
        },
        replicas=1,
        resources={"memory": "3Gi"},
        lifecycle={"startupTimeoutSeconds": 600, "drainSeconds": 5},
        exposure={"ingress": {"host": HOST, "path": "/"}},
    )
    cluster.kubectl("apply", "-f", "-", input=json.dumps(isvc))
    selector = f"pagoda.dev/inferenceservice={NAME}"
    try:
        cluster.wait(
            lambda: list(cluster.pods_ready(ns, selector).values()) == [True],
            timeout=900,
            what="the engine pod, admitted under restricted, to be Ready",
        )
    except AssertionError:
        print(cluster.describe(ns))
        raise

    (pod,) = cluster.get("pods", "-n", ns, "-l", selector)["items"]
    assert pod["status"]["phase"] == "Running"
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True, spec["securityContext"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c.get("securityContext") or {}
        assert sc.get("allowPrivilegeEscalation") is False, (c["name"], sc)
        assert sc.get("readOnlyRootFilesystem") is True, (c["name"], sc)
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], (c["name"], sc)
        assert not sc.get("capabilities", {}).get("add"), (c["name"], sc)
        assert sc.get("seccompProfile", {"type": "RuntimeDefault"})["type"] == "RuntimeDefault"

    # What the runtime made of it, read in the running engine's own process.
    name = pod["metadata"]["name"]
    probe = cluster.kubectl(
        "exec", "-n", ns, name, "-c", "engine", "--", "python3", "-c", PROC_PROBE
    )
    proc = json.loads(probe.stdout)
    assert proc["Uid"][0] != "0", proc  # real uid: not root
    assert int(proc["CapEff"][0], 16) == 0 and int(proc["CapBnd"][0], 16) == 0, proc
    assert proc["NoNewPrivs"] == ["1"], proc  # allowPrivilegeEscalation: false
    assert proc["Seccomp"] == ["2"], proc  # SECCOMP_MODE_FILTER: the runtime's default profile
    assert "ro" in proc["root"], proc

    out = cluster.say_hello_through_ingress(HOST, MODEL)
    assert out.choices[0].message.content.strip() and out.usage.completion_tokens >= 1


def test_the_charts_pods_pass_restricted(cluster: Cluster, chart):
    """`kubectl label --dry-run=server` of the enforce label: PSA answers with a warning naming
    each existing pod that would violate it. Shown to work on a namespace holding a privileged
    pod, then asked of the chart's namespace, which is never relabelled."""
    dry_run = ("--dry-run=server", "--overwrite", f"{PROFILE}=restricted")
    control = f"e2e-psa-ctl-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("apply", "-f", "-", input=json.dumps(namespace(control, None)))
    try:
        admitted = run_privileged(cluster, control)  # no profile here
        assert admitted.returncode == 0, admitted.stderr

        def warning() -> str | None:
            r = cluster.kubectl("label", "namespace", control, *dry_run)
            return r.stderr if PRIVILEGED_POD in r.stderr else None

        # PSA lists pods from the apiserver's cache: the new one may take a moment to show.
        warned = cluster.wait(
            warning, timeout=30, what=f"the dry run to name the privileged pod of {control}"
        )
        assert f'existing pods in namespace "{control}" violate' in warned, warned
    finally:
        delete_namespace(cluster, control)

    assert PROFILE not in cluster.get("namespace", OPERATOR_NS)["metadata"].get("labels", {})
    # The check means something only if the chart's pods are there: every pod of the namespace.
    pods = cluster.get("pods", "-n", OPERATOR_NS)["items"]
    apps = {p["metadata"]["labels"].get("app.kubernetes.io/name") for p in pods}
    assert apps == {"pagoda-operator", "pagoda-gateway"}, apps
    out = cluster.kubectl("label", "namespace", OPERATOR_NS, *dry_run)
    assert "server dry run" in out.stdout, out.stdout
    assert "violate" not in out.stderr and "PodSecurity" not in out.stderr, out.stderr
    assert PROFILE not in cluster.get("namespace", OPERATOR_NS)["metadata"].get("labels", {})
