#!/usr/bin/env bash
# Install Grafana's dashboard types and TypeScript (pinned in package.json, no other dependencies)
# into the cache, outside the work tree, for test_chart_dashboard.py's type check. Needs node/npm.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEST=${PAGODA_CACHE:-$HOME/.cache/pagoda}/npm/grafana-schema
mkdir -p "$DEST"
cp "$HERE/package.json" "$DEST/package.json"
cd "$DEST" && npm install --no-audit --no-fund --no-package-lock --silent
echo "grafana-schema: $(node -p 'require("typescript/package.json").version') typescript, @grafana/schema $(node -p 'require("@grafana/schema/package.json").version') in $DEST"
