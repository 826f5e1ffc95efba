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
# Short of room, docker's leftovers from earlier runs go first (dangling images, build cache
# older than a day); loading into the node then checks for what it needs (images/build.sh).
if [ $(( $(df --output=avail -k "$STATE" | tail -1) / 1048576 )) -lt 16 ]; then
  echo "[e2e/run.sh] under 16 GiB free under $STATE: pruning docker's dangling images and old build cache" >&2
  docker image prune -f >/dev/null; docker builder prune -f --filter until=24h >/dev/null
fi
bash "$ROOT/images/build.sh" --load engine-cpu operator
bash "$ROOT/images/nginx.sh"  # deploy/compose's load balancer (tests/e2e/test_compose.py)
echo "[e2e/run.sh] cluster and images ready after $(( $(date +%s) - t0 ))s" >&2
# shellcheck disable=SC1091
source "$STATE/env"
cd "$ROOT"
# The chaos tests (6.5 minutes) run alone with `make test-chaos` (E2E_MARKERS=chaos): with them,
# `make test` on a fresh machine (Go parts built) would pass an hour.
"$PY" -m pytest tests/e2e -m "${E2E_MARKERS:-e2e and not chaos}" -p no:cacheprovider "$@"
