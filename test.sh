#!/usr/bin/env bash
# Runs every test, installing what they need first: Debian's nix-bin and
# prometheus for the end-to-end tests that drive the real Nix client and a
# real Prometheus (they skip without them, or fail when CI is set), and the
# Go modules.
set -euo pipefail
cd "$(dirname "$0")"

if ! .ci/install-debs nix:nix-bin prometheus:prometheus; then
  echo "test.sh: end-to-end tests that need them will be skipped" >&2
fi

go mod download
# The race detector needs cgo; the binary itself is always built with
# CGO_ENABLED=0 (see .ci/run).
CGO_ENABLED=1 go test -race -count=1 "$@" ./...
