#!/usr/bin/env bash
# Cold fetch of one large NAR by N concurrent clients through the proxy.
# Builds a signed binary cache with the real Nix client (a SIZE random-bytes
# store path, uncompressed), serves it as the upstream, starts the proxy on
# an empty cache dir, and has N curl clients fetch the NAR at once. Prints
# how many times the upstream served the NAR, whether every client got the
# same bytes, the wall time, and the proxy's peak RSS (VmHWM).
#
#   bench/cold-concurrent.sh [SIZE_MIB=1024] [CLIENTS=8]
set -euo pipefail
size_mib=${1:-1024}
clients=${2:-8}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

command -v nix >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq nix-bin >/dev/null; } \
  || { echo "needs nix (apt-get install nix-bin)" >&2; exit 1; }
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

echo "== building a signed upstream with a ${size_mib} MiB path"
nix key generate-secret --key-name bench-1 > "$work/sk"
nix key convert-secret-to-public < "$work/sk" > "$work/pk"
head -c "$((size_mib << 20))" /dev/urandom > "$work/image"
path=$(nix store add-file --store "$work/store" "$work/image")
rm "$work/image"
nix copy --store "$work/store" --to "file://$work/up?compression=none&secret-key=$work/sk" "$path" 2>/dev/null
rm -rf "$work/store"
hash=$(basename "$path" | cut -c1-32)

up_port=$(free_port)
(cd "$work/up" && exec python3 -m http.server --bind 127.0.0.1 "$up_port") 2>"$work/upstream.log" >/dev/null &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/nix-cache-info"

echo "== starting the proxy"
(cd "$root" && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy)
px_port=$(free_port)
"$work/nix-cache-proxy" serve --listen "127.0.0.1:$px_port" --cache-dir "$work/cache" \
  --upstream "http://127.0.0.1:$up_port" --trusted-public-key "$(cat "$work/pk")" 2>"$work/proxy.log" &
proxy=$!
pids+=($proxy)
px=http://127.0.0.1:$px_port
wait_http "$px/nix-cache-info"

nar=$(curl -fs "$px/$hash.narinfo" | sed -n 's/^URL: //p')
want=$(curl -fs "http://127.0.0.1:$up_port/$hash.narinfo" | sed -n 's/^FileHash: sha256://p')
echo "== $clients clients fetch $nar at once"
start=$(date +%s.%N)
for i in $(seq "$clients"); do
  (curl -fsS "$px/$nar" | sha256sum | cut -d' ' -f1 > "$work/client.$i") &
done
while [ "$(jobs -rp | wc -l)" -gt 2 ]; do  # the upstream and the proxy stay
  sleep 0.2
done
wait_clients=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$proxy/status")
sums=$(sort -u "$work"/client.* | wc -l)
fetches=$(grep -c "GET /nar/" "$work/upstream.log" || true)
got=$(head -1 "$work/client.1")
want_hex=$(python3 - "$want" <<'PY'
import sys
alpha = "0123456789abcdfghijklmnpqrsvwxyz"
s = sys.argv[1]
n = 0
# Nix base32 is little-endian over the digest bytes.
out = bytearray(32)
for i, c in enumerate(reversed(s)):
    v = alpha.index(c)
    for b in range(5):
        bit = i * 5 + b
        if bit < 256 and (v >> b) & 1:
            out[bit // 8] |= 1 << (bit % 8)
print(out.hex())
PY
)
echo "wall time:              $(echo "$wait_clients - $start" | bc) s"
echo "upstream NAR requests:  $fetches"
echo "distinct client sha256: $sums ($( [ "$got" = "$want_hex" ] && echo matches FileHash || echo "DOES NOT match FileHash $want_hex"))"
echo "proxy peak RSS (VmHWM): $((hwm / 1024)) MiB"
