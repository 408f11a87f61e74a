#!/usr/bin/env bash
# Measures --recompress=zstd with the real Nix client, in one run.
#
# It copies MIB MiB of shared libraries (/usr/lib/x86_64-linux-gnu, a
# compressible closure like cache.nixos.org's) into PATHS store paths, puts
# them in a signed file:// binary cache with `nix copy --to
# file://…?compression=xz` (cache.nixos.org's compression), and serves it
# with nginx as static files (ref). In front of ref: nginx proxy_cache, the
# proxy with --recompress=off (today) and the proxy with --recompress=zstd.
# REPS times it measures:
#   cold: `nix copy` of the closure through an empty cache (the first
#         client), proxy zstd vs proxy off (goal: not slower by > 10 %);
#   warm: `nix copy` once the cache holds it (for the zstd proxy: once
#         every narinfo names a zstd file) through nginx, the zstd proxy
#         and from ref directly (goal: >= 3x faster than either);
#   CPU:  the zstd proxy's recompress_cpu_seconds_total per GiB of NAR.
#
#   bench/recompress.sh [--mib N] [--paths N] [--reps N] [--proxy BINARY] [--keep]
#
# bench/run.sh runs it for its recompress rows (with its own --reps and
# --proxy); --proxy: measure that binary instead of building ./cmd/proxy.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mib=256 npaths=8 reps=3 keep= proxy_bin=
while [ $# -gt 0 ]; do
  case $1 in
    --mib) mib=$2; shift 2 ;;
    --paths) npaths=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --proxy) proxy_bin=$(realpath "$2"); shift 2 ;;
    *) echo "usage: $0 [--mib N] [--paths N] [--reps N] [--proxy BINARY] [--keep]" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d /tmp/bench-recompress.XXXXXX)
mkdir -p "$work/logs"
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'recompress.sh: %s\n' "$*" >&2; exit 1; }
declare -A pid=()
cleanup() {
  for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "$keep" ] && { echo "kept $work" >&2; return; }
  chmod -R u+w "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return; sleep 0.05; done
  die "no answer from $1"
}
stop() { [ -n "${pid[$1]:-}" ] && { kill "${pid[$1]}" 2>/dev/null || true; wait "${pid[$1]}" 2>/dev/null || true; unset "pid[$1]"; }; return 0; }

export XDG_CACHE_HOME=$work/xdg
nixconf=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'
export NIX_CONFIG=$nixconf

log "payload: $mib MiB of /usr/lib/x86_64-linux-gnu in $npaths store paths, into an xz binary cache"
nix key generate-secret --key-name bench-1 >"$work/sk"
nix key convert-secret-to-public <"$work/sk" >"$work/pk"
pk=$(cat "$work/pk")
per=$((mib * 1048576 / npaths)) i=0 size=0
mkdir -p "$work/payload/0"
while IFS= read -r f; do
  s=$(stat -c %s "$f")
  [ "$s" -gt 0 ] || continue
  if [ "$size" -ge "$per" ]; then
    i=$((i + 1)) size=0
    [ "$i" -ge "$npaths" ] && break
    mkdir -p "$work/payload/$i"
  fi
  cp "$f" "$work/payload/$i/"
  size=$((size + s))
done < <(find /usr/lib/x86_64-linux-gnu -maxdepth 1 -type f -name '*.so*' | sort)
paths=()
for d in "$work"/payload/*; do
  paths+=("$(nix store add-path --store "$work/store" --name "bench-libs-$(basename "$d")" "$d")")
done
t0=$EPOCHREALTIME
nix copy --store "$work/store" --to "file://$work/up?compression=xz&secret-key=$work/sk" "${paths[@]}" 2>>"$work/logs/build.err"
log "xz cache built in $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $t0}") s: NAR $(du -sb "$work/payload" | cut -f1) bytes, xz $(du -sbc "$work"/up/nar/* | tail -1 | cut -f1) bytes"
chmod -R u+w "$work/store" && rm -rf "$work/store"

port_ref=$(free_port) port_nginx=$(free_port) port_off=$(free_port) port_zstd=$(free_port)
declare -A url=([ref]=http://127.0.0.1:$port_ref [nginx]=http://127.0.0.1:$port_nginx [off]=http://127.0.0.1:$port_off [zstd]=http://127.0.0.1:$port_zstd)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
nginx_conf() { # nginx_conf DIR BODY
  mkdir -p "$1/tmp"
  cat >"$1/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes auto;
pid $1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $1/tmp/body; proxy_temp_path $1/tmp/proxy; fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi; scgi_temp_path $1/tmp/scgi;
  access_log off; sendfile on; keepalive_requests 1000000;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
$2
}
EOF
}
nginx_conf "$work/ref" "  server { listen 127.0.0.1:$port_ref; root $work/up; }"
nginx -e stderr -p "$work/ref/" -c "$work/ref/nginx.conf" 2>"$work/logs/ref.log" &
pid[ref]=$!
wait_http "${url[ref]}/nix-cache-info"

if [ -n "$proxy_bin" ]; then
  cp "$proxy_bin" "$work/nix-cache-proxy"
else
  log "building the proxy"
  (cd "$root" && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy)
fi

start_cache() { # start_cache NAME: an empty cache in front of ref
  local name=$1
  stop "$name"
  rm -rf "$work/cache-$name"
  case $name in
    nginx)
      nginx_conf "$work/cache-nginx" "  proxy_cache_path $work/cache-nginx/c levels=1:2 keys_zone=nix:16m max_size=50g inactive=365d use_temp_path=off;
  server { listen 127.0.0.1:$port_nginx;
    location / { proxy_pass http://127.0.0.1:$port_ref; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_cache nix; proxy_cache_lock on; proxy_cache_valid 200 365d; proxy_cache_valid 404 1m; } }"
      nginx -e stderr -p "$work/cache-nginx/" -c "$work/cache-nginx/nginx.conf" 2>"$work/logs/nginx.log" &
      ;;
    off | zstd)
      local port=$port_off
      [ "$name" = zstd ] && port=$port_zstd
      "$work/nix-cache-proxy" serve --listen "127.0.0.1:$port" --cache-dir "$work/cache-$name" \
        --upstream "${url[ref]}" --trusted-public-key "$pk" --recompress "$name" \
        --shutdown-timeout 1s --log-level warn 2>"$work/logs/proxy-$name.log" &
      ;;
  esac
  pid[$name]=$!
  wait_http "${url[$name]}/nix-cache-info"
}

results=$work/results.tsv
: >"$results"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
copy() { # copy NAME: nix copy of every path from NAME into a fresh store; prints seconds
  local dst=$work/dst t0
  rm -rf "$dst" "$work/xdg-copy"
  t0=$EPOCHREALTIME
  XDG_CACHE_HOME=$work/xdg-copy NIX_CONFIG="$nixconf"$'trusted-public-keys = '"$pk"$'\nrequire-sigs = true\n' \
    nix copy --from "${url[$1]}" --to "$dst" "${paths[@]}" 2>"$work/logs/copy.err" ||
    { cat "$work/logs/copy.err" >&2; die "nix copy from $1 failed"; }
  awk "BEGIN {printf \"%.3f\", $EPOCHREALTIME - $t0}"
  chmod -R u+w "$dst" && rm -rf "$dst"
}
metric() { curl -fsS "${url[zstd]}/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
wait_zstd() { # every narinfo through the zstd proxy names a zstd file
  local p h
  for p in "${paths[@]}"; do
    h=$(basename "$p" | cut -c1-32)
    for _ in $(seq 6000); do
      curl -fsS "${url[zstd]}/$h.narinfo" | grep -q '^Compression: zstd' && continue 2
      sleep 0.1
    done
    die "zstd proxy: $h not recompressed after 10 minutes"
  done
}

for r in $(seq "$reps"); do
  log "run $r/$reps: cold, the first client (proxy off vs zstd; nginx)"
  for s in off zstd nginx; do
    start_cache "$s"
    rec cold "$s" "$(copy "$s")"
    # The zstd proxy recompresses once its first client is done: let it
    # finish before the next measurement.
    [ "$s" = zstd ] && wait_zstd
  done
  rec cpu_per_gib zstd "$(awk -v c="$(metric nix_cache_proxy_recompress_cpu_seconds_total)" -v b="$(du -sb "$work/payload" | cut -f1)" 'BEGIN {printf "%.2f", c / (b / 1073741824)}')"
  log "run $r/$reps: warm (ref, nginx, proxy off, proxy zstd)"
  for s in ref nginx off zstd; do
    rec warm "$s" "$(copy "$s")"
  done
done
stop off; stop zstd; stop nginx

med() { awk -F'\t' -v k="$1" -v s="$2" '$1 == k && $2 == s {print $3}' "$results" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo
echo "--recompress=zstd, $(date -u +%FT%TZ), $(nproc) cores, uptime:$(uptime | sed 's/.*load average/ load average/')"
echo "$npaths paths, $(du -sb "$work/payload" | awk '{printf "%.0f MiB", $1 / 1048576}') NAR, $(du -sbc "$work"/up/nar/* | tail -1 | awk '{printf "%.0f MiB", $1 / 1048576}') xz; $reps runs, medians (all values in $results)"
echo
echo "| nix copy, s | ref (upstream) | nginx proxy_cache | proxy --recompress=off | proxy --recompress=zstd |"
echo "|---|---|---|---|---|"
echo "| cold (first client) | – | $(med cold nginx) | $(med cold off) | $(med cold zstd) |"
echo "| warm | $(med warm ref) | $(med warm nginx) | $(med warm off) | $(med warm zstd) |"
echo
awk -v ref="$(med warm ref)" -v ng="$(med warm nginx)" -v z="$(med warm zstd)" -v co="$(med cold off)" -v cz="$(med cold zstd)" -v cpu="$(med cpu_per_gib zstd)" 'BEGIN {
  printf "warm: zstd proxy %.2fx faster than ref, %.2fx faster than nginx (goal >= 3x)\n", ref / z, ng / z
  printf "cold: zstd proxy / off proxy = %.2f (goal <= 1.10)\n", cz / co
  printf "CPU: %s s per GiB of NAR recompressed\n", cpu
}'
echo; echo "every run (kind, server, value):"; cat "$results"
