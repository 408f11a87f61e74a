#!/usr/bin/env bash
# Runs every test, installing what they need first: Debian's nix-bin and
# prometheus for the end-to-end tests that drive the real Nix client and a
# real Prometheus, iproute2 and nftables for the relay's tests over network
# namespaces (they take a cache's link down or drop its packets), versitygw
# for those that need a real S3 server, nix-bin, python3 and shellcheck for
# deploy/'s checks of the modules (evaluated in nixpkgs' lib and nix-darwin
# from ../shared/nix-src, whose activation script nix-darwin shellchecks)
# and the plist (they skip without them, or fail when CI is set), and the
# Go modules.
set -euo pipefail
cd "$(dirname "$0")"

if ! .ci/install-debs nix:nix-bin prometheus:prometheus python3:python3 shellcheck:shellcheck ip:iproute2 nft:nftables; then
  echo "test.sh: end-to-end tests that need them will be skipped" >&2
fi

go mod download

# versitygw, the real S3 server the fleet tests (--storage s3://) run
# against. A tool, not a module dependency: installed once into a cache dir.
tools="${XDG_CACHE_HOME:-$HOME/.cache}/nix-cache-proxy-tools/versitygw-v1.8.0"
if [ ! -x "$tools/versitygw" ]; then
  echo "test.sh: installing versitygw v1.8.0 into $tools" >&2
  GOBIN="$tools" go install github.com/versity/versitygw/cmd/versitygw@v1.8.0 ||
    echo "test.sh: S3 tests that need it will be skipped" >&2
fi
export PATH="$tools:$PATH"
# The race detector needs cgo; the binary itself is always built with
# CGO_ENABLED=0 (see .ci/run). -timeout bounds each package's test binary:
# go test's default of 10m is a hang detector that cmd/proxy's end-to-end
# tests (real Nix, 20 power cuts, crash points, S3) came within a few
# minutes of on a 2-core machine running the other packages beside it
# (5-6 min, and past 10 with the machine busy). Each of those tests bounds
# its own waits.
CGO_ENABLED=1 go test -race -count=1 -timeout 30m "$@" ./...
