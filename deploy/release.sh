#!/usr/bin/env bash
# Usage: deploy/release.sh [VERSION]
#
# Cross-compiles static nix-cache-proxy binaries (CGO_ENABLED=0) into dist/:
# dist/nix-cache-proxy-<os>-<arch> for linux and darwin, amd64 and arm64,
# with VERSION (default: `git describe --tags --always --dirty`) and the
# commit stamped in (`nix-cache-proxy version` prints them), then
# dist/SHA256SUMS (check with `sha256sum -c SHA256SUMS`, or
# `shasum -a 256 -c SHA256SUMS` on a Mac).
#
# Environment: DIST (output directory, default dist), TARGETS (space-separated
# os/arch list, default all four; deploy/container/build.sh builds one).
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo devel)}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
dist=${DIST:-dist}
targets=${TARGETS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64}

mkdir -p "$dist"
rm -f "$dist"/nix-cache-proxy-* "$dist/SHA256SUMS"
for target in $targets; do
  os=${target%/*} arch=${target#*/}
  out="$dist/nix-cache-proxy-$os-$arch"
  # -trimpath and no build ID: the same commit builds the same bytes.
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false \
    -ldflags "-s -w -buildid= -X main.version=$version -X main.commit=$commit" \
    -o "$out" ./cmd/proxy
  echo "built $out ($version, $commit)"
done

cd "$dist"
if command -v sha256sum >/dev/null; then
  sha256sum nix-cache-proxy-* >SHA256SUMS
else
  shasum -a 256 nix-cache-proxy-* >SHA256SUMS
fi
echo "wrote $dist/SHA256SUMS"
