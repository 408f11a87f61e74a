#!/usr/bin/env bash
# Several proxies on one S3 bucket (versitygw, posix backend, on loopback).
# Builds a signed binary cache with the real Nix client (a SIZE random-bytes
# path, uncompressed), serves it as the upstream, and measures:
#
#   cold image, 6 clients on 1 proxy        wall time, upstream NAR fetches
#   cold image, 6 clients over 3 proxies    the same, on a fresh bucket prefix
#   NAR hit, 1 client                       MiB/s from the bucket vs from a
#                                           proxy on its local cache dir
#   bucket requests per narinfo hit and per NAR hit (from /metrics)
#
#   bench/fleet.sh [SIZE_MIB=512]
#
# Needs nix, curl, python3 and versitygw on PATH (test.sh installs it into
# ~/.cache/nix-cache-proxy-tools/versitygw-v1.8.0).
set -euo pipefail
size_mib=${1:-512}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
PATH="${XDG_CACHE_HOME:-$HOME/.cache}/nix-cache-proxy-tools/versitygw-v1.8.0:$PATH"
command -v versitygw >/dev/null || { echo "needs versitygw (./test.sh installs it)" >&2; exit 1; }
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret AWS_EC2_METADATA_DISABLED=true

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }

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

s3_port=$(free_port)
mkdir -p "$work/s3/bench"
ROOT_ACCESS_KEY=$AWS_ACCESS_KEY_ID ROOT_SECRET_KEY=$AWS_SECRET_ACCESS_KEY \
  versitygw --port "127.0.0.1:$s3_port" --quiet posix "$work/s3" >"$work/s3.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$s3_port/"

(cd "$root" && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy)
# start_proxy NAME STORAGE: starts a proxy, sets $url_NAME.
start_proxy() {
  local port; port=$(free_port)
  local args=(serve --listen "127.0.0.1:$port" --cache-dir "$work/cache-$1" --upstream "http://127.0.0.1:$up_port"
    --trusted-public-key "$(cat "$work/pk")" --advertise-url "http://127.0.0.1:$port")
  [ -n "$2" ] && args+=(--storage "$2")
  "$work/nix-cache-proxy" "${args[@]}" 2>"$work/proxy-$1.log" &
  pids+=($!)
  wait_http "http://127.0.0.1:$port/nix-cache-info"
  printf -v "url_$1" '%s' "http://127.0.0.1:$port"
}
fetches() { grep -c "GET /nar/" "$work/upstream.log" || true; }
# cold URLS...: 6 clients spread over the proxies given; prints wall time
# and the upstream fetches it cost.
cold() {
  local before; before=$(fetches)
  local urls=("$@") nar
  for u in "${urls[@]}"; do nar=$(curl -fs "$u/$hash.narinfo" | sed -n 's/^URL: //p'); done
  local start; start=$(date +%s.%N)
  for i in $(seq 6); do
    (curl -fsS "${urls[$((i % ${#urls[@]}))]}/$nar" | sha256sum | cut -d' ' -f1 > "$work/client.$i") &
  done
  wait_clients
  local wall; wall=$(echo "$(date +%s.%N) - $start" | bc)
  printf '  wall %.2f s, upstream NAR fetches %d, distinct client sha256 %d\n' "$wall" "$(($(fetches) - before))" "$(sort -u "$work"/client.* | wc -l)"
}
wait_clients() { while [ "$(jobs -rp | wc -l)" -gt "${#pids[@]}" ]; do sleep 0.1; done; }
hit() { # hit URL: MiB/s of one client's NAR hit
  local nar; nar=$(curl -fs "$1/$hash.narinfo" | sed -n 's/^URL: //p')
  curl -fsS -o /dev/null -w '%{speed_download}\n' "$1/$nar" | awk '{printf "%.0f", $1 / 1048576}'
}
bucket_requests() { curl -fs "$1/metrics" | awk '/^nix_cache_proxy_bucket_requests_total\{/ {n += $NF} END {print n + 0}'; }
s3="s3://bench/%s?endpoint=127.0.0.1:$s3_port&scheme=http"

echo "== cold ${size_mib} MiB image, 6 clients, 1 proxy on the bucket"
start_proxy one "$(printf "$s3" one)"
cold "$url_one"
echo "== cold ${size_mib} MiB image, 6 clients over 3 proxies on one bucket (fresh prefix)"
start_proxy a "$(printf "$s3" three)"; start_proxy b "$(printf "$s3" three)"; start_proxy c "$(printf "$s3" three)"
cold "$url_a" "$url_b" "$url_c"
echo "== NAR hit, 1 client"
start_proxy dir ""
curl -fs -o /dev/null "$url_dir/$(curl -fs "$url_dir/$hash.narinfo" | sed -n 's/^URL: //p')"
for r in 1 2 3; do
  echo "  run $r: bucket $(hit "$url_a") MiB/s, local dir $(hit "$url_dir") MiB/s"
done
echo "== bucket requests per hit (proxy a)"
b0=$(bucket_requests "$url_a")
for _ in $(seq 100); do curl -fs -o /dev/null "$url_a/$hash.narinfo"; done
b1=$(bucket_requests "$url_a")
nar=$(curl -fs "$url_a/$hash.narinfo" | sed -n 's/^URL: //p')
curl -fs -o /dev/null "$url_a/$nar"
b2=$(bucket_requests "$url_a")
echo "  100 narinfo hits: $((b1 - b0)) requests; 1 NAR hit: $((b2 - b1)) requests"
