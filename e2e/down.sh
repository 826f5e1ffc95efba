#!/usr/bin/env bash
# Tear down what e2e/up.sh started: pods (through the kubelet, so CNI releases their
# addresses), then Traefik, kube-proxy and its iptables rules, kubelet, the control plane,
# containerd; then leftover mounts, the bridge and the state. Images in containerd's store are
# kept for the next up.sh (a tens-of-seconds saving); `down.sh --purge` removes them too.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/cluster/versions.env"
STATE=${PAGODA_E2E_STATE:-/var/lib/pagoda-e2e}
RUN=/run/pagoda-e2e
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
K8SBIN=$CACHE/bin/k8s-$K8S_VERSION
BRIDGE=pagoda0
export PATH=$K8SBIN:$PATH
log() { echo "[down.sh] $*" >&2; }

stop() {  # stop NAME [SECONDS]
  local f=$RUN/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq $(( ${2:-15} * 4 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && { log "$1 did not stop, killing"; kill -9 "$pid"; }
  fi
  rm -f "$f"
}

if [ -f "$RUN/kubelet.pid" ] && [ -f "$STATE/cp/kubeconfig" ]; then
  export KUBECONFIG=$STATE/cp/kubeconfig
  log "deleting all pods"
  kubectl delete pods --all -A --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1 || true
fi
stop traefik
stop lws-controller
stop coredns
stop kube-proxy
kube-proxy --cleanup >/dev/null 2>&1 || true
stop kubelet
stop controlplane 30
if [ -S "$RUN/containerd.sock" ]; then
  CTR=(ctr -a "$RUN/containerd.sock" -n k8s.io)
  for c in $("${CTR[@]}" containers ls -q 2>/dev/null); do
    "${CTR[@]}" tasks kill -s SIGKILL "$c" >/dev/null 2>&1
    "${CTR[@]}" tasks delete -f "$c" >/dev/null 2>&1
    "${CTR[@]}" containers delete "$c" >/dev/null 2>&1
  done
  if [ "${1:-}" = --purge ]; then
    for i in $("${CTR[@]}" images ls -q 2>/dev/null); do "${CTR[@]}" images rm "$i" >/dev/null 2>&1; done
  fi
fi
stop containerd
# leftover mounts (pod volumes, sandbox shm, overlay snapshots) under our state, deepest first
for root in "$STATE/kubelet" "$RUN" "$STATE/containerd"; do
  grep -o " $root[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
done
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns"; done
ip link delete "$BRIDGE" 2>/dev/null
# iptables chains of kube-proxy, the kubelet (KUBE-*) and the CNI plugins (CNI-*); others' stay
for ipt in iptables ip6tables; do
  for t in filter nat mangle; do
    $ipt -t $t -S 2>/dev/null | grep -E -- '-j (KUBE-|CNI-)' | grep -vE '^-A (KUBE-|CNI-)' | sed 's/^-A/-D/' |
      while read -r r; do eval "$ipt -t $t $r" 2>/dev/null; done
    chains=$($ipt -t $t -S 2>/dev/null | awk '/^-N (KUBE-|CNI-)/{print $2}')
    for c in $chains; do $ipt -t $t -F "$c" 2>/dev/null; done
    for c in $chains; do $ipt -t $t -X "$c" 2>/dev/null; done
  done
done
rm -rf "$RUN" "$STATE/cp" "$STATE/kubelet" "$STATE/cni" "$STATE/pki" "$STATE/env"
[ "${1:-}" = --purge ] && rm -rf "$STATE"
log "down"
