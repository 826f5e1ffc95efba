#!/usr/bin/env bash
# The e2e cluster on kind, for a machine with Docker and internet (kind pulls kindest/node,
# Helm pulls Traefik's chart and image). Not runnable on the CI machine (no registry there).
#   e2e/kind/up.sh && source "${PAGODA_KIND_ENV:-/tmp/pagoda-kind.env}" && pytest tests/e2e -m e2e
#   e2e/kind/down.sh
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$(dirname "$HERE")")
source "$ROOT/e2e/cluster/versions.env"
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
NAME=${PAGODA_KIND_NAME:-pagoda}
ENVFILE=${PAGODA_KIND_ENV:-/tmp/pagoda-kind.env}
bash "$ROOT/e2e/cluster/build.sh" kind controlplane     # kind, kubectl, helm from their Go modules
export PATH=$CACHE/bin/kind-$KIND_VERSION:$CACHE/bin/k8s-$K8S_VERSION:$CACHE/bin/helm-$HELM_VERSION:$PATH
KUBECONFIG_FILE=$HOME/.kube/pagoda-kind
kind get clusters | grep -qx "$NAME" || kind create cluster --name "$NAME" --config "$HERE/kind-config.yaml" \
  --kubeconfig "$KUBECONFIG_FILE" --wait 120s
export KUBECONFIG=$KUBECONFIG_FILE
# Ingress: Traefik, the same controller as the local node, exposed on NodePort 30080.
helm repo add traefik https://traefik.github.io/charts >/dev/null 2>&1 || true
helm repo update traefik >/dev/null
helm upgrade --install traefik traefik/traefik -n traefik --create-namespace --wait \
  --set service.type=NodePort --set ports.web.nodePort=30080 \
  --set ingressClass.isDefaultClass=true
# Images: built from a public base, then side-loaded into the kind node.
BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim-bookworm} bash "$ROOT/images/build.sh" engine-cpu operator
TAG=$(awk '/^appVersion:/{gsub(/"/,"",$2); print $2}' "$ROOT/charts/pagoda-operator/Chart.yaml")
kind load docker-image --name "$NAME" "pagoda-engine:$TAG" "pagoda-operator:$TAG"
cat >"$ENVFILE" <<EOT
export KUBECONFIG=$KUBECONFIG_FILE
export PAGODA_E2E_INGRESS_URL=http://127.0.0.1:30080
export PATH=$CACHE/bin/k8s-$K8S_VERSION:$CACHE/bin/helm-$HELM_VERSION:\$PATH
EOT
echo "kind cluster $NAME ready: source $ENVFILE"
