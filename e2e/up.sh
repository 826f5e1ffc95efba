#!/usr/bin/env bash
# Bring up a real single-node Kubernetes cluster on this machine, from upstream parts:
#   control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler: e2e/controlplane.py)
#   node: containerd + runc (Debian), CNI bridge/host-local/loopback/portmap (Debian's
#         containernetworking-plugins), kubelet, kube-proxy (iptables mode)
#   ingress: Traefik v3 (kubernetesIngress provider) on 127.0.0.1:$PAGODA_E2E_INGRESS_PORT
#   LeaderWorkerSet (kubernetes-sigs/lws): its controller and webhooks, for multi-node engines
# Everything runs as host processes (root needed); state in $STATE, logs in $STATE/logs.
# When it is up it writes $STATE/env (source it): KUBECONFIG, PAGODA_E2E_INGRESS_URL, PATH.
# Tear down with e2e/down.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=cluster/versions.env
source "$HERE/cluster/versions.env"
STATE=${PAGODA_E2E_STATE:-/var/lib/pagoda-e2e}
RUN=/run/pagoda-e2e
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
K8SBIN=$CACHE/bin/k8s-$K8S_VERSION
TRAEFIK=$CACHE/bin/traefik-$TRAEFIK_VERSION/traefik
NODE=pagoda-node
BRIDGE=pagoda0
NODE_IP=10.244.0.1          # the bridge's address: pods reach the apiserver and kubelet here
POD_SUBNET=10.244.0.0/24
APISERVER_PORT=6443
INGRESS_PORT=${PAGODA_E2E_INGRESS_PORT:-30080}
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
export PATH=$K8SBIN:$CACHE/bin/helm-$HELM_VERSION:$PATH
t0=$(date +%s)
log() { echo "[up.sh +$(( $(date +%s) - t0 ))s] $*" >&2; }
die() { echo "[up.sh] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (kubelet, containerd, iptables)"

[ -n "${PAGODA_E2E_SKIP_BUILD:-}" ] || bash "$HERE/cluster/build.sh" controlplane node lws
for b in containerd runc iptables conntrack /usr/lib/cni/bridge; do
  command -v "$b" >/dev/null || die "$b missing: apt-get install -y containerd runc iptables conntrack containernetworking-plugins"
done
if [ -f "$RUN/kubelet.pid" ]; then die "already up (run e2e/down.sh first)"; fi
rm -rf "$STATE/logs"; mkdir -p "$STATE/logs" "$RUN" "$STATE/cni/net.d" "$STATE/pki"

start() {  # start NAME CMD... : a daemon with a pid file and a log
  local name=$1; shift
  nohup "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}
wait_for() {  # wait_for SECONDS WHAT CMD...
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 4))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.25; done
  die "timed out after ${secs}s waiting for $what (logs in $STATE/logs)"
}

# --- host networking -------------------------------------------------------------------------
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "warning: no bridge-nf-call-iptables"
sysctl -qw net.ipv4.conf.all.route_localnet=1
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up
# "firewall": dockerd sets the FORWARD policy to DROP; the CNI firewall plugin accepts each
# pod's traffic in its CNI-FORWARD chain (without it, pod-to-pod traffic is dropped).
cat >"$STATE/cni/net.d/10-pagoda.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "pagoda", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "firewall", "backend": "iptables"},
  {"type": "loopback"}]}
EOF

# --- containerd (its own instance, cgroupfs driver: this kernel has cgroup v1) ---------------
cat >"$STATE/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine's root lacks CAP_SYS_RESOURCE (CapEff 000001fffeffffff: bit 24 clear), so no
  # process may lower its oom_score_adj; unrestricted, runc fails every pod sandbox with
  # "failed to update /proc/self/oom_score_adj: Permission denied" (it asks for -998).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
start containerd containerd --config "$STATE/containerd.toml"
wait_for 30 containerd ctr -a "$RUN/containerd.sock" version
CTR=(ctr -a "$RUN/containerd.sock" -n k8s.io)

# The pod sandbox ("pause") image, built from upstream's pause.c (no registry to pull it from).
if ! "${CTR[@]}" images ls -q | grep -qx "$PAUSE_IMAGE"; then
  src=$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION/build/pause/linux/pause.c
  [ -f "$src" ] || (cd /tmp && go mod download "k8s.io/kubernetes@$K8S_VERSION")
  d=$(mktemp -d); mkdir -p "$d/root"
  gcc -Os -static -DVERSION="v3.10.1-pagoda" -o "$d/root/pause" "$src"
  strip "$d/root/pause"
  python3 "$HERE/node/image_archive.py" "$d/root" "$PAUSE_IMAGE" '["/pause"]' "$d/pause.tar"
  "${CTR[@]}" images import "$d/pause.tar" >/dev/null
  rm -rf "$d"
fi
log "containerd up"

# --- control plane ---------------------------------------------------------------------------
start controlplane python3 "$HERE/controlplane.py" --dir "$STATE/cp" --bind-address "$NODE_IP" --port "$APISERVER_PORT"
wait_for 120 "the control plane" grep -q "control plane ready" "$STATE/logs/controlplane.log"
export KUBECONFIG=$STATE/cp/kubeconfig
PKI=$STATE/cp/pki
log "control plane up: $(grep 'control plane ready' "$STATE/logs/controlplane.log" | tail -1)"

client_kubeconfig() {  # client_kubeconfig NAME SUBJECT : cert signed by the cluster CA + kubeconfig
  local n=$1 subj=$2 d=$STATE/pki
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$d/$n.key" \
    -out "$d/$n.csr" -subj "$subj" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$d/$n.ext"
  openssl x509 -req -in "$d/$n.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 365 -extfile "$d/$n.ext" -out "$d/$n.crt" 2>/dev/null
  kubectl config --kubeconfig "$d/$n.kubeconfig" set-cluster local --server "https://$NODE_IP:$APISERVER_PORT" \
    --certificate-authority "$PKI/ca.crt" >/dev/null
  kubectl config --kubeconfig "$d/$n.kubeconfig" set-credentials "$n" --client-certificate "$d/$n.crt" \
    --client-key "$d/$n.key" >/dev/null
  kubectl config --kubeconfig "$d/$n.kubeconfig" set-context local --cluster local --user "$n" >/dev/null
  kubectl config --kubeconfig "$d/$n.kubeconfig" use-context local >/dev/null
}
client_kubeconfig kubelet "/O=system:nodes/CN=system:node:$NODE"
client_kubeconfig kube-proxy "/CN=system:kube-proxy"

# --- kubelet ---------------------------------------------------------------------------------
cat >"$STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "200Mi", nodefs.available: "2Gi", imagefs.available: "2Gi"}
# Image GC off (100): images come from ctr import, not a registry, so a collected image (the
# pause image included) could never be pulled back; a large image load must not trigger it.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podPidsLimit: -1
EOF
start kubelet kubelet --config "$STATE/kubelet.yaml" --kubeconfig "$STATE/pki/kubelet.kubeconfig" \
  --hostname-override "$NODE" --node-ip "$NODE_IP" --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --v=1
wait_for 90 "node $NODE to register" kubectl get node "$NODE"
kubectl wait --for=condition=Ready "node/$NODE" --timeout=90s >/dev/null || die "node not Ready: $(tail -20 "$STATE/logs/kubelet.log")"
log "kubelet up, node $NODE Ready"

# --- kube-proxy ------------------------------------------------------------------------------
cat >"$STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/pki/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $NODE
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}
EOF
start kube-proxy kube-proxy --config "$STATE/kube-proxy.yaml" --v=1
wait_for 60 kube-proxy curl -sf http://127.0.0.1:10256/healthz
log "kube-proxy up"

# --- cluster DNS: CoreDNS (kubernetes plugin) on the bridge address ------------------------
kubectl apply -f "$HERE/node/coredns-rbac.yaml" >/dev/null
token_kubeconfig() {  # token_kubeconfig SA FILE: a kubeconfig with a ServiceAccount token
  kubectl config --kubeconfig "$2" set-cluster local --server "https://$NODE_IP:$APISERVER_PORT" \
    --certificate-authority "$PKI/ca.crt" >/dev/null
  kubectl config --kubeconfig "$2" set-credentials "$1" \
    --token "$(kubectl -n kube-system create token "$1" --duration=48h)" >/dev/null
  kubectl config --kubeconfig "$2" set-context local --cluster local --user "$1" >/dev/null
  kubectl config --kubeconfig "$2" use-context local >/dev/null
}
token_kubeconfig pagoda-coredns "$STATE/pki/coredns.kubeconfig"
cat >"$STATE/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE/pki/coredns.kubeconfig local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    forward . /etc/resolv.conf
    cache 30
}
EOF
start coredns "$CACHE/bin/coredns-$COREDNS_VERSION/coredns" -conf "$STATE/Corefile"
wait_for 60 coredns curl -sf http://127.0.0.1:8181/ready
log "coredns up on $NODE_IP:53"

# --- ingress: Traefik, watching Ingresses with a ServiceAccount token ------------------------
kubectl apply -f "$HERE/node/traefik-rbac.yaml" >/dev/null
kubectl -n kube-system create token pagoda-traefik --duration=48h >"$STATE/pki/traefik.token"
# no KUBECONFIG: Traefik would prefer it to the token; no phoning home (version check, stats)
start traefik env -u KUBECONFIG "$TRAEFIK" --global.checkNewVersion=false --global.sendAnonymousUsage=false \
  --entryPoints.web.address="127.0.0.1:$INGRESS_PORT" \
  --providers.kubernetesingress=true \
  --providers.kubernetesingress.endpoint="https://$NODE_IP:$APISERVER_PORT" \
  --providers.kubernetesingress.token="$(cat "$STATE/pki/traefik.token")" \
  --providers.kubernetesingress.certauthfilepath="$PKI/ca.crt" \
  --providers.kubernetesingress.ingressclass=traefik \
  --ping=true --ping.entryPoint=web --log.level=INFO --log.noColor=true
wait_for 60 traefik curl -sf "http://127.0.0.1:$INGRESS_PORT/ping"
log "traefik up on 127.0.0.1:$INGRESS_PORT"

# --- LeaderWorkerSet: the controller as a host process, its webhooks served to the apiserver on
# loopback (a URL, not a Service) with a certificate from the cluster CA (e2e/lws.py) ----------
LWS=$CACHE/bin/lws-$LWS_VERSION
kubectl apply --server-side -f "$LWS/crd.yaml" >/dev/null
python3 "$HERE/lws.py" "$STATE/lws" "$PKI" 9445 8086
start lws-controller "$LWS/lws-controller" --config "$STATE/lws/config.yaml" --kubeconfig "$KUBECONFIG"
wait_for 60 "the LWS controller" curl -sf http://127.0.0.1:8086/readyz
wait_for 60 "the LWS webhooks" curl -s --cacert "$PKI/ca.crt" -o /dev/null https://127.0.0.1:9445/
kubectl apply -f "$STATE/lws/webhooks.json" >/dev/null
log "LeaderWorkerSet $LWS_VERSION up (webhooks on 127.0.0.1:9445)"

cat >"$STATE/env" <<EOF
export KUBECONFIG=$KUBECONFIG
export PAGODA_E2E_INGRESS_URL=http://127.0.0.1:$INGRESS_PORT
export PAGODA_E2E_CONTAINERD=$RUN/containerd.sock
export PATH=$K8SBIN:$CACHE/bin/helm-$HELM_VERSION:\$PATH
EOF
log "cluster up. Use it with: source $STATE/env"
