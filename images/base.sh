#!/usr/bin/env bash
# Make the local base image (Debian bookworm minbase + python3 + venv), with no registry:
# debootstrap from the host's own Debian mirror into a directory, tar it, `docker import`.
# The root filesystem tarball is cached, so a rerun only re-imports (seconds).
#   usage: images/base.sh [TAG]      (default pagoda/base:bookworm; needs root, dockerd, debootstrap)
# Elsewhere, use any public Python 3.11+ image instead: docker build --build-arg BASE_IMAGE=python:3.12-slim
set -euo pipefail
TAG=${1:-${BASE_IMAGE:-pagoda/base:bookworm}}
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
TAR=$CACHE/images/base-bookworm.tar
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "base image $TAG present"; exit 0; fi
if [ ! -s "$TAR" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  root=$(mktemp -d /var/tmp/pagoda-base.XXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm from ${MIRROR:-the default mirror} into $root"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" ${MIRROR:+"$MIRROR"}
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
  mkdir -p "$(dirname "$TAR")"
  tar -C "$root" --numeric-owner -cf "$TAR.tmp" .
  mv "$TAR.tmp" "$TAR"
fi
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$TAR" "$TAG"
echo "base image $TAG imported"
