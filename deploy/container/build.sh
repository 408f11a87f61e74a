#!/usr/bin/env bash
# Usage: deploy/container/build.sh TAG
#
# Builds the nix-cache-proxy image TAG (FROM scratch: no base image is
# pulled, so it builds without a registry) with podman, or docker when
# podman is absent. The binary is deploy/release.sh's linux build for ARCH,
# so the image's `version` is the checkout's. Runs from a fresh clone with
# Go and podman or docker installed; nothing needs building first.
#
# Environment:
#   ARCH                      amd64 or arm64 (default: the host's, as Go names it)
#   CONTAINER_ENGINE          podman or docker (default: podman if present)
#   CONTAINER_STORAGE_ROOT    podman only: keep images under this directory
#                             (--root, --runroot) instead of the machine's store
#   CONTAINER_STORAGE_DRIVER  podman only: --storage-driver, e.g. vfs where
#                             overlay is unavailable (nested containers, CI)
#   CA_BUNDLE                 PEM bundle of CA certificates to put in the image
#                             (default: the host's)
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 TAG" >&2
  exit 2
fi
tag=$1
root=$(cd "$(dirname "$0")/../.." && pwd)

engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  if command -v podman >/dev/null; then engine=podman
  elif command -v docker >/dev/null; then engine=docker
  else echo "$0: neither podman nor docker is installed" >&2; exit 1
  fi
fi
cmd=("$engine")
if [ "$engine" = podman ]; then
  if [ -n "${CONTAINER_STORAGE_ROOT:-}" ]; then
    cmd+=(--root "$CONTAINER_STORAGE_ROOT/root" --runroot "$CONTAINER_STORAGE_ROOT/run")
  fi
  if [ -n "${CONTAINER_STORAGE_DRIVER:-}" ]; then
    cmd+=(--storage-driver "$CONTAINER_STORAGE_DRIVER")
  fi
fi

# The https upstreams need CA roots, which a scratch image lacks.
ca=${CA_BUNDLE:-}
if [ -z "$ca" ]; then
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
    if [ -s "$f" ]; then ca=$f; break; fi
  done
fi
if [ -z "$ca" ]; then
  echo "$0: no CA bundle found; set CA_BUNDLE to a PEM file of CA certificates" >&2
  exit 1
fi

arch=${ARCH:-$(cd "$root" && go env GOARCH)}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
DIST="$ctx/dist" TARGETS="linux/$arch" "$root/deploy/release.sh"
cp "$ctx/dist/nix-cache-proxy-linux-$arch" "$ctx/nix-cache-proxy"
cp "$ca" "$ctx/ca-certificates.crt"
mkdir "$ctx/data"
cp "$root/deploy/container/Containerfile" "$ctx/Containerfile"

version=$("$ctx/nix-cache-proxy" version 2>/dev/null || true)
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
format=()
# HEALTHCHECK is a Docker-format field: podman drops it from OCI images.
[ "$engine" = podman ] && format=(--format docker)
"${cmd[@]}" build "${format[@]}" --platform "linux/$arch" \
  --label "org.opencontainers.image.title=nix-cache-proxy" \
  --label "org.opencontainers.image.revision=$revision" \
  --label "org.opencontainers.image.description=${version:-nix-cache-proxy}" \
  -f "$ctx/Containerfile" -t "$tag" "$ctx"
echo "built image $tag (linux/$arch) with $engine"
