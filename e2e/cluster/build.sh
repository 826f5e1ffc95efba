#!/usr/bin/env bash
# Build (once) every upstream binary the local cluster needs, from the upstream Go modules
# at the versions pinned in versions.env, and cache them under
#   ${PAGODA_CACHE:-~/.cache/pagoda}/bin/<component>-<version>/
# Idempotent: a binary already in the cache is not rebuilt. Safe to run concurrently with
# nothing else of ours; uses at most GO_PARALLEL (default: nproc) compile jobs.
#
# usage: e2e/cluster/build.sh [controlplane|node|kind|all]...   (default: controlplane node)
#   controlplane: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm
#                 versitygw (the S3 server of the s3:// model tests)
#   node:         kubelet kube-proxy traefik (ingress controller) coredns (cluster DNS)
#   kind:         kind (only for running the e2e tier on a kind cluster elsewhere)
#   adapter:      prometheus-adapter (serves the custom metrics API to the e2e tier's HPA test)
#   lws:          the LeaderWorkerSet controller (multi-node engines) and its CRD
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$HERE/versions.env"
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
SRC=$CACHE/src
export GOFLAGS="-trimpath -buildvcs=false" GOTOOLCHAIN=local CGO_ENABLED=0
export GOMAXPROCS=${GOMAXPROCS:-$(nproc)}
P=${GO_PARALLEL:-$(nproc)}
command -v go >/dev/null || { echo "build.sh: Go (>= 1.24) is needed: apt-get install golang-go or put go on PATH" >&2; exit 1; }

log() { echo "[build.sh $(date +%H:%M:%S)] $*" >&2; }

# gobuild MODDIR OUTDIR LDFLAGS PKG... : build PKGs of the temp module MODDIR into OUTDIR
gobuild() {
  local mod=$1 out=$2 ld=$3; shift 3
  local tmp; tmp=$(mktemp -d "$out.tmp.XXXX")
  (cd "$mod" && go build -mod=mod -p "$P" -ldflags "-s -w $ld" -o "$tmp/" "$@")
  for f in "$tmp"/*; do mv -f "$f" "$out/"; done
  rmdir "$tmp"
}

module_copy() {  # module_copy PATH@VERSION DIR : a writable copy of a module's own tree, whose
  # go.mod (with its replace/exclude directives) then builds its commands as upstream does
  local dir
  [ -f "$2/go.mod" ] && return
  dir=$(cd /tmp && go mod download -json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$2" "$2.tmp"; mkdir -p "$(dirname "$2")"
  cp -r "$dir" "$2.tmp" && chmod -R u+w "$2.tmp" && mv "$2.tmp" "$2"
}

k8s_module() {  # temp module that requires k8s.io/kubernetes with its staging repos pinned
  local mod=$SRC/k8s-$K8S_VERSION
  mkdir -p "$mod"
  if [ ! -f "$mod/go.mod" ]; then
    {
      echo "module pagoda.local/k8sbuild"
      echo "go 1.24.0"
      echo "require k8s.io/kubernetes $K8S_VERSION"
      echo "replace ("
      for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider \
        cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api \
        cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms \
        kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics \
        mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller; do
        echo "  k8s.io/$m => k8s.io/$m $K8S_STAGING_VERSION"
      done
      echo ")"
    } > "$mod/go.mod.new"
    mv "$mod/go.mod.new" "$mod/go.mod"
  fi
  echo "$mod"
}

build_k8s() {  # build_k8s NAME... (cmd names under k8s.io/kubernetes/cmd)
  local out=$CACHE/bin/k8s-$K8S_VERSION pkgs=() n
  mkdir -p "$out"
  for n in "$@"; do [ -x "$out/$n" ] || pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  [ ${#pkgs[@]} -eq 0 ] && { log "k8s $K8S_VERSION: $* cached"; return; }
  log "k8s $K8S_VERSION: building ${pkgs[*]}"
  local mod; mod=$(k8s_module)
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  gobuild "$mod" "$out" "$ld" "${pkgs[@]}"
  log "k8s $K8S_VERSION: built ${pkgs[*]}"
}

build_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  [ -x "$out/etcd" ] && { log "etcd $ETCD_VERSION cached"; return; }
  log "etcd $ETCD_VERSION: building"
  local mod=$SRC/etcd-$ETCD_VERSION
  mkdir -p "$mod" "$out"
  printf 'module pagoda.local/etcdbuild\ngo 1.24.0\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$mod/go.mod"
  gobuild "$mod" "$out" "" go.etcd.io/etcd/server/v3
  [ -x "$out/server" ] && mv "$out/server" "$out/etcd"
  log "etcd $ETCD_VERSION: built"
}

build_helm() {
  local out=$CACHE/bin/helm-$HELM_VERSION
  # Helm's own Makefile stamps the Kubernetes version it was built against (from client-go,
  # v0.34 -> 1.34); without it `helm template` and `helm lint` assume Kubernetes 1.20.
  local kv; kv=$(printf '%s' "$K8S_STAGING_VERSION" | sed -E 's/^v0\.([0-9]+)\..*/\1/')
  local ld="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in pkg/lint/rules pkg/chartutil; do
    ld+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$kv"
  done
  [ -x "$out/helm" ] && [ "$(cat "$out/.ldflags" 2>/dev/null)" = "$ld" ] && { log "helm $HELM_VERSION cached"; return; }
  log "helm $HELM_VERSION: building"
  local mod=$SRC/helm-$HELM_VERSION
  mkdir -p "$mod" "$out"
  printf 'module pagoda.local/helmbuild\ngo 1.24.0\nrequire helm.sh/helm/v3 %s\n' "$HELM_VERSION" > "$mod/go.mod"
  gobuild "$mod" "$out" "$ld" helm.sh/helm/v3/cmd/helm
  printf '%s' "$ld" > "$out/.ldflags"
  log "helm $HELM_VERSION: built"
}

# module_build NAME VERSION MODULE PKG BIN [LDFLAGS]: $CACHE/bin/NAME-VERSION/BIN, built from PKG in
# a copy of MODULE's own tree at VERSION ($SRC/NAME-module-VERSION: its go.mod's replace/exclude
# directives and go.sum pin what upstream builds with), unless it is there already.
module_build() {
  local name=$1 version=$2 module=$3 pkg=$4 bin=$5 ld=${6:-}
  local out=$CACHE/bin/$name-$version mod=$SRC/$name-module-$version built
  [ -x "$out/$bin" ] && { log "$name $version cached"; return; }
  log "$name $version: building"
  module_copy "$module@$version" "$mod"
  mkdir -p "$out"
  gobuild "$mod" "$out" "$ld" "$pkg"
  built=${pkg##*/}; [ "$pkg" = . ] && built=${module##*/}  # go build's name for the command
  [ "$built" = "$bin" ] || mv -f "$out/$built" "$out/$bin"
  log "$name $version: built"
}

build_traefik() {
  module_build traefik "$TRAEFIK_VERSION" github.com/traefik/traefik/v3 ./cmd/traefik traefik \
    "-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
}

build_coredns() {  # cluster DNS for the node (kopf reaches kubernetes.default.svc by name)
  module_build coredns "$COREDNS_VERSION" github.com/coredns/coredns . coredns
}

build_versitygw() {  # an S3 server over a folder, for s3:// models (tests/integration/s3). Not
  # MinIO: its server is AGPL-3.0 and has no tagged releases on the Go module proxy; versitygw is
  # Apache-2.0.
  module_build versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw ./cmd/versitygw versitygw \
    "-X main.Version=$VERSITYGW_VERSION"
}

build_prometheus_adapter() {
  module_build prometheus-adapter "$PROMETHEUS_ADAPTER_VERSION" sigs.k8s.io/prometheus-adapter \
    ./cmd/adapter prometheus-adapter
}

build_lws() {  # the controller, and its CRD (config/crd/bases) beside it: one version of both
  module_build lws "$LWS_VERSION" sigs.k8s.io/lws ./cmd lws-controller \
    "-X sigs.k8s.io/lws/pkg/version.GitVersion=$LWS_VERSION"
  local out=$CACHE/bin/lws-$LWS_VERSION mod=$SRC/lws-module-$LWS_VERSION
  [ -f "$out/crd.yaml" ] && return
  module_copy "sigs.k8s.io/lws@$LWS_VERSION" "$mod"
  cp "$mod/config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml" "$out/crd.yaml"
}

build_kind() {
  local out=$CACHE/bin/kind-$KIND_VERSION
  [ -x "$out/kind" ] && { log "kind $KIND_VERSION cached"; return; }
  mkdir -p "$out"
  GOBIN=$out go install "sigs.k8s.io/kind@$KIND_VERSION"
  log "kind $KIND_VERSION: built"
}

targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(controlplane node)
start=$(date +%s)
for t in "${targets[@]}"; do
  case $t in
    controlplane) build_etcd; build_k8s kube-apiserver kube-controller-manager kube-scheduler kubectl; build_helm
                  build_versitygw ;;
    node) build_k8s kubelet kube-proxy; build_traefik; build_coredns ;;
    kind) build_kind ;;
    adapter) build_prometheus_adapter ;;
    lws) build_lws ;;
    all) build_etcd; build_k8s kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
         build_helm; build_versitygw; build_traefik; build_coredns; build_prometheus_adapter; build_lws ;;
    etcd|helm|versitygw|traefik|coredns|lws) "build_$t" ;;
    kube-*|kubectl|kubelet) build_k8s "$t" ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done
log "done in $(( $(date +%s) - start ))s; binaries under $CACHE/bin"
