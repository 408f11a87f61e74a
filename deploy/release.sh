#!/usr/bin/env bash
# Usage: deploy/release.sh [VERSION]
#
# Cross-compiles static nix-cache-proxy binaries (CGO_ENABLED=0) into dist/:
# dist/nix-cache-proxy-<os>-<arch> for linux and darwin, amd64 and arm64,
# with VERSION and the commit stamped in (`nix-cache-proxy version` prints
# them), then dist/SHA256SUMS (check with `sha256sum -c SHA256SUMS`, or
# `shasum -a 256 -c SHA256SUMS` on a Mac), checked before it exits.
#
# VERSION defaults to the release tag on HEAD (v0.1.0), else what
# `git describe --tags` says (v0.1.0-3-gabc1234), else, before the first
# tag, the newest release in CHANGELOG.md as a pre-release of it
# (v0.1.0-dev+abc1234). A release VERSION (vX.Y.Z) needs its section in
# CHANGELOG.md.
#
# Environment: DIST (output directory, default dist), TARGETS (space-separated
# os/arch list, default all four; deploy/container/build.sh builds one).
set -euo pipefail
cd "$(dirname "$0")/.."

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=
if [ "$commit" != unknown ] && [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  dirty=-dirty
  commit="$commit$dirty"
fi
newest=$(sed -n 's/^## \[\([0-9][^]]*\)\].*/\1/p' CHANGELOG.md | head -n 1)
if [ $# -ge 1 ]; then
  version=$1
elif ! version=$(git describe --tags --match 'v[0-9]*' --dirty 2>/dev/null); then
  version="v${newest:-0.0.0}-dev+$(git rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+.dirty}"
fi
if [[ $version =~ ^v?([0-9]+\.[0-9]+\.[0-9]+)$ ]] && ! grep -q "^## \[${BASH_REMATCH[1]}\]" CHANGELOG.md; then
  echo "release.sh: CHANGELOG.md has no section for $version (## [${BASH_REMATCH[1]}] - DATE)" >&2
  exit 1
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
if command -v sha256sum >/dev/null; then
  sha256sum -c --quiet SHA256SUMS
else
  shasum -a 256 -c --quiet SHA256SUMS
fi
echo "wrote $dist/SHA256SUMS ($version), checked"
