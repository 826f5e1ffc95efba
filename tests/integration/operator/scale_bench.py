"""How the operator fares with many InferenceServices on a real control plane (issue 21, point 8).

Not a test (pytest does not collect it): a measurement, run by hand, whose figures go to
docs/performance.md.

    .venv/bin/python tests/integration/operator/scale_bench.py --count 200 --namespaces 4

It starts the integration tier's control plane (e2e/controlplane.py: etcd, kube-apiserver,
controller-manager, scheduler; no node, so engine pods stay Pending), runs `pagoda operator` as a
process of its own, creates COUNT CPU InferenceServices, and reports:
- apply-to-children: from each create call's return to its Deployment, its Service and both
  (the later of the two) showing up on a watch;
- the steady state over --steady seconds once every status is written: the operator's API requests
  per second by verb and resource (the apiserver's own apiserver_request_total, nothing else
  talking), status writes per InferenceService per minute, CPU (share of one core), RSS, and the
  INFO log lines per second;
- delete: from deleting every InferenceService to the last one gone (the finalizer released).

`--audit` also turns on the apiserver's audit log (metadata of every request, kept in
--audit-log) and reports where a create's time goes: the operator's requests per InferenceService
in the create phase by verb and resource, the apiserver's time on each kind of request, and per
InferenceService the times from its create to kopf's first patch of it, to the reconcile's read of
it, to its ConfigMap's, Deployment's and Service's applies and to its status write, the
reconcile's end (p50 / p99 of each).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import kubernetes
import urllib3

ROOT = Path(__file__).resolve().parents[3]
GROUP, VERSION, PLURAL = "pagoda.dev", "v1alpha1", "inferenceservices"
SPEC = {"model": {"uri": "default"}, "replicas": 1, "resources": {"cpu": "1", "memory": "1Gi"}}
BENCH_AGENT = "pagoda-scale-bench"  # this script's own requests, told apart in the audit log
# The operator's two clients: kopf's and the kubernetes package's (the rest of the audit log is
# the control plane's own and this script's).
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""


def controlplane_module():
    spec = importlib.util.spec_from_file_location("cp", ROOT / "e2e" / "controlplane.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def proc_peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def apiserver_requests(cp) -> Counter:
    """apiserver_request_total by (verb, resource, subresource), from the apiserver's /metrics."""
    out: Counter = Counter()
    for line in cp.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        key = (labels.get("verb"), labels.get("resource"), labels.get("subresource", ""))
        out[key] += float(line.rsplit(" ", 1)[1])
    return out


def line_count(path: Path) -> int:
    with open(path) as f:
        return sum(1 for _ in f)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def _ts(s: str) -> float:
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def audit_report(path: Path, count: int, until: float) -> dict:
    """Where the creates' time went, from the audit log. Requests are counted up to `until`
    (epoch seconds: the last Deployment seen); the times run to each object's first of each."""
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    created: dict[tuple[str, str], float] = {}
    by_kind: Counter = Counter()
    server_ms: dict[str, list[float]] = {}
    # Per InferenceService, when its first of each happened.
    marks: dict[str, dict[tuple[str, str], float]] = {
        "kopf_first_patch": {},  # kopf's finalizer (received)
        "reconcile_read": {},  # the reconcile's GET of it (received)
        "configmap_applied": {},
        "deployment_applied": {},
        "service_applied": {},
        "status_written": {},  # the reconcile's end: every child applied
    }
    for e in events:
        agent, ref, verb = e.get("userAgent", ""), e.get("objectRef") or {}, e["verb"]
        received, done = _ts(e["requestReceivedTimestamp"]), _ts(e["stageTimestamp"])
        resource, sub = ref.get("resource", ""), ref.get("subresource", "")
        key = (ref.get("namespace", ""), ref.get("name", "").removesuffix("-engine"))
        if agent == BENCH_AGENT:
            if verb == "create" and resource == PLURAL:
                created[key] = done  # the apiserver names a created object in its objectRef
            continue
        if not agent.startswith(OPERATOR_AGENTS) or verb == "watch":
            continue
        if received <= until:
            what = f"{verb} {resource}" + (f"/{sub}" if sub else "")
            by_kind[f"{what} ({agent.split('/')[0]})"] += 1
            server_ms.setdefault(what, []).append((done - received) * 1000)
        if resource == PLURAL:
            if verb == "patch" and not sub:
                marks["kopf_first_patch"].setdefault(key, received)
            if verb == "get":
                marks["reconcile_read"].setdefault(key, received)
            if verb == "patch" and sub == "status":
                marks["status_written"].setdefault(key, done)
        for child in ("configmap", "deployment", "service"):
            if resource == f"{child}s" and verb == "patch":
                marks[f"{child}_applied"].setdefault(key, done)
    phases = {}
    for mark, at in marks.items():
        lags = [at[k] - t for k, t in created.items() if k in at]
        if lags:
            phases[f"create_to_{mark}_s"] = {
                "p50": round(statistics.median(lags), 2),
                "p99": round(pct(lags, 0.99), 2),
                "n": len(lags),
            }
    return {
        "operator_requests_per_create": {
            k: round(n / count, 2) for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1])
        },
        "operator_requests_per_create_total": round(sum(by_kind.values()) / count, 2),
        "apiserver_ms_p50_p99": {
            what: [round(statistics.median(ms), 1), round(pct(ms, 0.99), 1)]
            for what, ms in sorted(server_ms.items())
            if len(ms) >= count / 2  # the create's own requests, not the odd discovery call
        },
        "phases": phases,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--namespaces", type=int, default=4)
    p.add_argument("--steady", type=float, default=60.0, help="seconds of steady state measured")
    p.add_argument("--observe-interval", type=float, default=10.0)
    p.add_argument(
        "--pagoda",
        default=str(Path(sys.executable).parent / "pagoda"),
        help="the `pagoda` command to run the operator with (another checkout's, to compare)",
    )
    p.add_argument("--log", default="/tmp/operator-scale.log", help="the operator's log")
    p.add_argument("--audit", action="store_true", help="where the creates' time goes (above)")
    p.add_argument("--audit-log", default="/tmp/operator-scale-audit.log", help="with --audit")
    args = p.parse_args()

    cpmod = controlplane_module()
    audit_log = Path(args.audit_log)
    audit_flags = []
    if args.audit:
        audit_log.unlink(missing_ok=True)
        policy = audit_log.with_suffix(".policy.yaml")
        policy.write_text(AUDIT_POLICY)
        audit_flags = [f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}"]
    with cpmod.ControlPlane(apiserver_args=audit_flags) as cp:
        cp.kubectl("apply", "--server-side", "-f", str(ROOT / "crds" / "inferenceservice.yaml"))
        # `kubectl wait` right after the create can miss the object (as in conftest.py): poll.
        established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
        while (
            "True"
            not in cp.kubectl(
                "get", "crd/inferenceservices.pagoda.dev", "-o", established, check=False
            ).stdout
        ):
            time.sleep(0.2)
        namespaces = [f"scale-{i}" for i in range(args.namespaces)]
        for ns in namespaces:
            cp.kubectl("create", "namespace", ns)
        api = kubernetes.config.new_client_from_config(config_file=cp.kubeconfig)
        api.user_agent = BENCH_AGENT
        custom = kubernetes.client.CustomObjectsApi(api)
        apps, core = kubernetes.client.AppsV1Api(api), kubernetes.client.CoreV1Api(api)

        log_path = Path(args.log)
        log = open(log_path, "w")  # noqa: SIM115  (the operator process writes it until the end)
        ns_flags = [x for ns in namespaces for x in ("--namespace", ns)]
        operator = subprocess.Popen(
            [
                args.pagoda,
                "operator",
                "--standalone",
                *ns_flags,
                "--metrics-port",
                "0",
                "--liveness-port",
                "0",
                "--observe-interval",
                str(args.observe_interval),
            ],
            env={**os.environ, "KUBECONFIG": cp.kubeconfig},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(5)  # the operator's startup: login, CRD discovery, watches
            # When each Deployment and each Service first showed up on a watch (the Service is
            # the slowest child to make: the apiserver allocates its ClusterIP).
            seen: dict[str, dict[tuple[str, str], float]] = {"Deployment": {}, "Service": {}}
            lists = {
                "Deployment": apps.list_namespaced_deployment,
                "Service": core.list_namespaced_service,
            }
            stop = threading.Event()

            def watch(kind: str, ns: str) -> None:
                w = kubernetes.watch.Watch()
                try:
                    for ev in w.stream(lists[kind], ns, timeout_seconds=600):
                        seen[kind].setdefault((ns, ev["object"].metadata.name), time.monotonic())
                        if stop.is_set():
                            w.stop()
                except urllib3.exceptions.ProtocolError:
                    pass  # the control plane stopped under the watch: the run is over

            for ns in namespaces:
                for kind in lists:
                    threading.Thread(target=watch, args=(kind, ns), daemon=True).start()
            time.sleep(1)
            created: dict[tuple[str, str], float] = {}
            pids = {"operator": operator.pid, "bench": os.getpid()}
            pids.update({n: p.pid for n, p in cp.procs.items()})
            cpu_before = {n: proc_cpu_seconds(pid) for n, pid in pids.items()}
            t0 = time.monotonic()
            for i in range(args.count):
                ns, name = namespaces[i % len(namespaces)], f"m{i:04d}"
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "InferenceService",
                    "metadata": {"name": name},
                    "spec": SPEC,
                }
                custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
                created[(ns, name)] = time.monotonic()
            create_s = time.monotonic() - t0
            deadline = time.monotonic() + 600
            for kind, at in seen.items():
                while len([k for k in created if k in at]) < len(created):
                    if time.monotonic() > deadline:
                        raise SystemExit(f"only {len(at)}/{len(created)} {kind}s after 600 s")
                    time.sleep(0.5)
            # An InferenceService's children are all there when the later of the two is.
            done = {k: max(at[k] for at in seen.values()) for k in created}
            lags = {kind: [at[k] - created[k] for k in created] for kind, at in seen.items()}
            lags["children"] = [done[k] - created[k] for k in created]
            all_children_s = max(done.values()) - t0
            # CPU seconds each process spent from the first create until now (all children made).
            create_cpu = {
                n: round(proc_cpu_seconds(pid) - cpu_before[n], 1) for n, pid in pids.items()
            }
            # The audit log's clock is the wall clock: the last child seen, in its time.
            until = time.time() - (time.monotonic() - max(done.values()))

            # Steady state: every status written, the Deployments' status settled (Pending pods).
            def converged() -> int:
                n = 0
                for ns in namespaces:
                    for o in custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)[
                        "items"
                    ]:
                        st = o.get("status") or {}
                        n += st.get("observedGeneration") == o["metadata"]["generation"]
                return n

            while converged() < args.count:
                time.sleep(2)
            time.sleep(2 * args.observe_interval)  # let the first looks write what they have
            lines_before = line_count(log_path)
            req0, cpu0 = apiserver_requests(cp), proc_cpu_seconds(operator.pid)
            time.sleep(args.steady)
            req1, cpu1 = apiserver_requests(cp), proc_cpu_seconds(operator.pid)
            lines = line_count(log_path) - lines_before
            rss = proc_rss_mb(operator.pid)
            # Our own GETs of /metrics are non-resource requests (resource ""): left out.
            delta = {
                k: v - req0.get(k, 0)
                for k, v in req1.items()
                if v - req0.get(k, 0) > 0 and k[1] != ""
            }
            status_writes = sum(
                v
                for (verb, res, sub), v in delta.items()
                if res == PLURAL and sub == "status" and verb == "PATCH"
            )

            t_del = time.monotonic()
            for ns in namespaces:
                custom.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)
            while any(
                custom.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
                for ns in namespaces
            ):
                if time.monotonic() - t_del > 300:
                    break
                time.sleep(0.5)
            delete_s = time.monotonic() - t_del
            stop.set()

            report = {
                "inferenceservices": args.count,
                "namespaces": args.namespaces,
                "create_calls_s": round(create_s, 1),
                **{
                    f"apply_to_{kind.lower()}_{q}_s": round(pct(xs, p), 2)
                    for kind, xs in lags.items()
                    for q, p in (("p50", 0.5), ("p99", 0.99))
                },
                "all_children_after_first_create_s": round(all_children_s, 1),
                "create_phase_cpu_s": create_cpu,
                "steady_seconds": args.steady,
                "steady_api_requests_per_s": round(sum(delta.values()) / args.steady, 2),
                "steady_requests_by_kind": {
                    f"{v} {r}/{s}".rstrip("/"): n for (v, r, s), n in sorted(delta.items())
                },
                "status_writes_per_isvc_per_min": round(
                    status_writes / args.count * 60 / args.steady, 3
                ),
                "operator_cpu_core_share": round((cpu1 - cpu0) / args.steady, 3),
                "operator_rss_mb": round(rss, 1),
                "operator_peak_rss_mb": round(proc_peak_rss_mb(operator.pid), 1),
                "log_lines_per_s": round(lines / args.steady, 2),
                "delete_all_s": round(delete_s, 1),
            }
            if args.audit:
                report["audit"] = audit_report(audit_log, args.count, until)
            print(json.dumps(report, indent=2))
        finally:
            operator.terminate()
            try:
                operator.wait(timeout=30)
            except subprocess.TimeoutExpired:
                operator.kill()
            log.close()


if __name__ == "__main__":
    main()
