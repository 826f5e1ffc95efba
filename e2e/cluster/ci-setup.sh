#!/usr/bin/env bash
# CI entry: install and build (or reuse from the cache) what a test tier needs.
#   e2e/cluster/ci-setup.sh integration   # etcd, kube-apiserver, -controller-manager, -scheduler,
#                                         # kubectl, helm (for tests/integration's `kube` fixture),
#   e2e/cluster/ci-setup.sh e2e           # + Debian's containerd/runc/CNI/docker.io/iptables,
#                                         # kubelet, kube-proxy, traefik (for e2e/up.sh),
#                                         # docker-compose (tests/e2e/test_compose.py),
#                                         # prometheus-adapter and Debian's prometheus
#                                         # (tests/e2e/test_hpa_adapter.py)
# Cached under ${PAGODA_CACHE:-~/.cache/pagoda}: a second run takes seconds.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tier=${1:-integration}
t0=$(date +%s)
need_apt=()
command -v openssl >/dev/null || need_apt+=(openssl)
command -v go >/dev/null || need_apt+=(golang-go)
if [ "$tier" = e2e ]; then
  for p in containerd:containerd runc:runc dockerd:docker.io iptables:iptables conntrack:conntrack \
           debootstrap:debootstrap gcc:gcc curl:curl docker-compose:docker-compose \
           prometheus:prometheus; do
    command -v "${p%%:*}" >/dev/null || need_apt+=("${p#*:}")
  done
  [ -x /usr/lib/cni/bridge ] || need_apt+=(containernetworking-plugins)
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[ci-setup] apt-get install ${need_apt[*]}" >&2
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_apt[@]}" >/dev/null
fi
case $tier in
  integration) bash "$HERE/build.sh" controlplane lws ;;
  e2e) bash "$HERE/build.sh" controlplane node lws adapter ;;
  *) echo "usage: $0 integration|e2e" >&2; exit 2 ;;
esac
echo "[ci-setup] $tier ready in $(( $(date +%s) - t0 ))s" >&2
