#!/usr/bin/env bash
set -euo pipefail
ROOT=$(dirname "$(dirname "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)")")
source "$ROOT/e2e/cluster/versions.env"
"${PAGODA_CACHE:-$HOME/.cache/pagoda}/bin/kind-$KIND_VERSION/kind" delete cluster --name "${PAGODA_KIND_NAME:-pagoda}"
