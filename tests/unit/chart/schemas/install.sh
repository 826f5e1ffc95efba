#!/usr/bin/env bash
# Install the upstream types the chart tests check against (pinned in package.json: Grafana's
# dashboard model, prometheus-operator's models, TypeScript) into the cache, outside the work
# tree. Needs node and npm.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${PAGODA_CACHE:-$HOME/.cache/pagoda}/npm/chart-schemas
mkdir -p "$DEST"
cp "$HERE/package.json" "$DEST/package.json"
cd "$DEST" && npm install --no-audit --no-fund --no-package-lock --silent
echo "chart schemas installed in $DEST"
