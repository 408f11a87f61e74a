#!/usr/bin/env bash
# Prefetch throughput against the physical reference: `curl -o file` of the
# same NAR from the same upstream. Builds a signed binary cache with the
# real Nix client (one SIZE MiB random path, uncompressed), serves it with
# nginx as a static file server, then alternates, REPEATS times each:
#   curl -o  <tmp>/nar  <upstream>/nar/<file>
#   nix-cache-proxy prefetch --cache-dir DIR <hash>   (no server: it opens a
#                                       fresh cache dir itself, fetches narinfo and
#                                       NAR, checks sha256, fsyncs, indexes)
# and prints the median of each and their ratio (ours / curl's throughput).
#
#   bench/prefetch-vs-curl.sh [SIZE_MIB=2048] [REPEATS=3]
set -euo pipefail
size_mib=${1:-2048}
repeats=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
chmod 755 "$work"  # nginx workers run as another user
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq "$2" >/dev/null; } || { echo "needs $1 (apt-get install $2)" >&2; exit 1; }; }
need nix nix-bin
need nginx nginx
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; return 1; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== building a signed upstream with a ${size_mib} MiB path"
nix key generate-secret --key-name bench-1 > "$work/sk"
nix key convert-secret-to-public < "$work/sk" > "$work/pk"
head -c "$((size_mib << 20))" /dev/urandom > "$work/image"
path=$(nix store add-file --store "$work/store" "$work/image" 2>/dev/null)
rm "$work/image"
nix copy --store "$work/store" --to "file://$work/up?compression=none&secret-key=$work/sk" "$path" 2>/dev/null
chmod -R a+rX "$work/up"
rm -rf "$work/store"
hash=$(basename "$path" | cut -c1-32)
nar=$(sed -n 's/^URL: //p' "$work/up/$hash.narinfo")

port=$(free_port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx/nginx.conf" <<CONF
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log stderr warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on; tcp_nopush on;
  server { listen 127.0.0.1:$port; root $work/up; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
up=http://127.0.0.1:$port
wait_http "$up/nix-cache-info"
(cd "$root" && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy)

echo "== $repeats runs each, alternating"
bytes=$(stat -c %s "$work/up/$nar")
for i in $(seq "$repeats"); do
  sync; rm -f "$work/out.nar"
  s=$(date +%s.%N); curl -fsS -o "$work/out.nar" "$up/$nar"; e=$(date +%s.%N)
  echo "$e - $s" | bc >> "$work/curl.times"
  rm -rf "$work/cache" "$work/out.nar"; sync
  s=$(date +%s.%N)
  "$work/nix-cache-proxy" prefetch --cache-dir "$work/cache" \
    --upstream "$up" --trusted-public-key "$(cat "$work/pk")" "$hash" 2>"$work/prefetch.log" \
    || { cat "$work/prefetch.log"; exit 1; }
  e=$(date +%s.%N)
  echo "$e - $s" | bc >> "$work/ours.times"
  echo "run $i: curl $(tail -1 "$work/curl.times") s, prefetch $(tail -1 "$work/ours.times") s"
done
c=$(median < "$work/curl.times"); o=$(median < "$work/ours.times")
mib=$((bytes >> 20))
printf 'median curl -o:   %6.2f s  %7.1f MiB/s\n' "$c" "$(echo "$mib / $c" | bc -l)"
printf 'median prefetch:  %6.2f s  %7.1f MiB/s\n' "$o" "$(echo "$mib / $o" | bc -l)"
printf 'ratio (prefetch throughput / curl throughput): %.2f\n' "$(echo "$c / $o" | bc -l)"
