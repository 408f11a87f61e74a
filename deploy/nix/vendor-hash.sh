#!/usr/bin/env bash
# Usage: deploy/nix/vendor-hash.sh [--check]
#
# Prints the vendorHash deploy/nix/package.nix needs: the NAR hash of what
# `go mod vendor` writes, which is what buildGoModule's goModules derivation
# stores. It needs Go and the nix command but no nixpkgs, so CI runs it with
# --check (exit 1 when package.nix's hash is stale). Without Go or offline,
# the fallback is nixpkgs' own answer: set vendorHash = lib.fakeHash, run
# `nix build .#default`, and copy the hash printed after "got:".
set -euo pipefail
cd "$(dirname "$0")/../.."

tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp"; rm -rf "$tmp"' EXIT
tar -cf - go.mod go.sum cmd internal | tar -xf - -C "$tmp"
(cd "$tmp" && go mod vendor)
hash=$(nix --extra-experimental-features nix-command hash path --type sha256 "$tmp/vendor")

if [ "${1:-}" != --check ]; then
  echo "$hash"
  exit 0
fi
have=$(sed -n 's/^ *vendorHash = "\(.*\)";/\1/p' deploy/nix/package.nix)
if [ "$have" != "$hash" ]; then
  echo "vendor-hash: deploy/nix/package.nix has vendorHash = \"$have\"; go.mod/go.sum need \"$hash\"" >&2
  exit 1
fi
echo "vendor-hash: deploy/nix/package.nix's vendorHash matches go.sum ($hash)"
