#!/usr/bin/env bash
# The whole e2e tier on this machine, as CI runs it: build/cache the cluster binaries, bring
# the single node up, build the images and load them into the node's containerd, run
# tests/e2e, tear everything down (also on failure). Exit status: pytest's.
#   e2e/run.sh [pytest args...]
# With KUBECONFIG and PAGODA_E2E_INGRESS_URL already set (kind, a real cluster), use
# `pytest tests/e2e` directly instead; see e2e/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
STATE=${PAGODA_E2E_STATE:-/var/lib/pagoda-e2e}
PY=${PYTHON:-python3}
t0=$(date +%s)
bash "$HERE/cluster/ci-setup.sh" e2e
pgrep -x dockerd >/dev/null || { nohup dockerd >/var/log/pagoda-dockerd.log 2>&1 & }
trap 'bash "$HERE/down.sh"' EXIT
bash "$HERE/up.sh"
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
# Loading the 6 GB engine image briefly needs it twice over (content + unpacked snapshot);
# below the kubelet's 2% eviction threshold it would start evicting, so say so up front.
free_gib() { echo $(( $(df --output=avail -k "$STATE" | tail -1) / 1048576 )); }
# Short of room, what earlier runs left is given back first, cheapest to rebuild first: docker's
# dangling images and build cache older than a day, then its whole build cache and unused images
# (the next build takes minutes longer), then the images kept in the node's containerd.
if [ "$(free_gib)" -lt 16 ]; then
  echo "[e2e/run.sh] $(free_gib) GiB free under $STATE; reclaiming what earlier runs left" >&2
  docker image prune -f >/dev/null; docker builder prune -f --filter until=24h >/dev/null
  [ "$(free_gib)" -ge 16 ] || { docker builder prune -af >/dev/null; docker image prune -af >/dev/null; }
  if [ "$(free_gib)" -lt 16 ]; then
    CTR=(ctr -a /run/pagoda-e2e/containerd.sock -n k8s.io)
    for i in $("${CTR[@]}" images ls -q | grep -E '^(docker.io/library/)?pagoda-'); do "${CTR[@]}" images rm --sync "$i" >/dev/null; done
  fi
fi
[ "$(free_gib)" -ge 16 ] || {
  echo "[e2e/run.sh] only $(free_gib) GiB free under $STATE; loading the images needs about 16. Largest:" >&2
  du -xsh /var/lib/docker "$STATE" "$HOME/.cache" /tmp 2>/dev/null | sort -h >&2; exit 1; }
bash "$ROOT/images/build.sh" --load engine-cpu operator
bash "$ROOT/images/nginx.sh"  # deploy/compose's load balancer (tests/e2e/test_compose.py)
echo "[e2e/run.sh] cluster and images ready after $(( $(date +%s) - t0 ))s" >&2
# shellcheck disable=SC1091
source "$STATE/env"
cd "$ROOT"
# The chaos tests (6.5 minutes) run alone with `make test-chaos` (E2E_MARKERS=chaos): with them,
# `make test` on a fresh machine (Go parts built) would pass an hour.
"$PY" -m pytest tests/e2e -m "${E2E_MARKERS:-e2e and not chaos}" -p no:cacheprovider "$@"
