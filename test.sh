#!/usr/bin/env bash
# Runs every test, installing what they need first: Debian's nix-bin for the
# end-to-end tests that drive the real Nix client (they skip without it, or
# fail when CI is set), and the Go modules.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v nix >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing nix-bin (Debian) for the end-to-end tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nix-bin >/dev/null
  else
    echo "test.sh: nix not found; end-to-end tests will be skipped (install Debian's nix-bin)" >&2
  fi
fi

go mod download
# The race detector needs cgo; the binary itself is always built with
# CGO_ENABLED=0 (see .ci/run).
CGO_ENABLED=1 go test -race -count=1 "$@" ./...
