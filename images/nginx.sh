#!/usr/bin/env bash
# Make the local nginx image (deploy/compose's load balancer) with no registry: Debian bookworm
# minbase + Debian's nginx and curl (for the health check), debootstrapped from the host's own
# Debian mirror, tarred, `docker import`ed, the way images/base.sh makes the Python base.
# The root filesystem tarball is cached, so a rerun only re-imports (seconds).
#   usage: images/nginx.sh [TAG]      (default pagoda/nginx:bookworm; needs root, dockerd, debootstrap)
# Elsewhere, use the public image instead: NGINX_IMAGE=nginx:1.27 docker-compose up
set -euo pipefail
TAG=${1:-${NGINX_IMAGE:-pagoda/nginx:bookworm}}
CACHE=${PAGODA_CACHE:-$HOME/.cache/pagoda}
TAR=$CACHE/images/nginx-bookworm.tar
if docker image inspect "$TAG" >/dev/null 2>&1; then echo "nginx image $TAG present"; exit 0; fi
if [ ! -s "$TAR" ]; then
  command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
  MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  root=$(mktemp -d /var/tmp/pagoda-nginx.XXXX)
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap bookworm + nginx from ${MIRROR:-the default mirror} into $root"
  debootstrap --variant=minbase --include=nginx,curl bookworm "$root" ${MIRROR:+"$MIRROR"}
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/etc/nginx/sites-enabled/*
  # Logs to the container's output, as the public nginx image does.
  ln -sf /dev/stdout "$root"/var/log/nginx/access.log
  ln -sf /dev/stderr "$root"/var/log/nginx/error.log
  mkdir -p "$(dirname "$TAR")"
  tar -C "$root" --numeric-owner -cf "$TAR.tmp" .
  mv "$TAR.tmp" "$TAR"
fi
docker import --change 'ENV LANG=C.UTF-8' --change 'EXPOSE 80' \
  --change 'CMD ["nginx", "-g", "daemon off;"]' "$TAR" "$TAG"
echo "nginx image $TAG imported"
