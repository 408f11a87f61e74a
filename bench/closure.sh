#!/usr/bin/env bash
# Measures a cold and a warm closure of many small paths with the real Nix
# client, in one run: what a darwin-rebuild or nix develop after a flake
# update substitutes (issue #22).
#
# It builds, with Nix, PATHS small store paths (bench/closure.nix: 1 to 60
# KiB of random base64 each; each refers to the one before it and to the one
# at half its index; a root refers to the last and to a 1 KiB "image", so
# its closure is PATHS + 2 paths), puts them in a signed
# file:// binary cache with compression=xz (cache.nixos.org's), and serves
# it with nginx as static files (ref). In front of ref: nginx proxy_cache
# (as bench/run.sh configures it) and the proxy; with --base BINARY, also
# that binary (say, one built from main before a change), as "base"
# (--base again: "base2", and so on).
# REPS times, each server in turn in an order that rotates from run to
# run (a slow moment of the shared machine lands on a different server
# each time), it measures `nix copy --from` of the closure into a fresh
# --store with a fresh narinfo cache: cold (an empty cache) and warm.
#
#   bench/closure.sh [--paths N] [--reps N] [--proxy BINARY] [--base BINARY]... [--keep]
#
# bench/run.sh runs it for its closure rows (with its own --reps and
# --proxy). --proxy: measure that binary instead of building ./cmd/proxy.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
npaths=1500 reps=3 keep='' proxy_bin=''
bases=()
while [ $# -gt 0 ]; do
  case $1 in
    --paths) npaths=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --proxy) proxy_bin=$(realpath "$2"); shift 2 ;;
    --base) bases+=("$(realpath "$2")"); shift 2 ;;
    *) echo "usage: $0 [--paths N] [--reps N] [--proxy BINARY] [--base BINARY] [--keep]" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d /tmp/bench-closure.XXXXXX)
mkdir -p "$work/logs"
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'closure.sh: %s\n' "$*" >&2; exit 1; }
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
nixconf=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nextra-sandbox-paths = /bin /usr /lib? /lib64?\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'
export NIX_CONFIG=$nixconf

log "building $npaths small paths and an xz binary cache of them"
nix key generate-secret --key-name bench-1 >"$work/sk"
nix key convert-secret-to-public <"$work/sk" >"$work/pk"
pk=$(cat "$work/pk")
t0=$EPOCHREALTIME
# fsync-metadata off: the build store is thrown away, and registering
# 1,500 paths each with an fsync took most of the 12 minutes it took.
out=$(NIX_CONFIG="$nixconf"$'fsync-metadata = false\n' nix build 2>>"$work/logs/build.err" --store "$work/store" --no-link --json --max-jobs 4 \
  -f "$root/bench/closure.nix" --argstr nonce "$RANDOM$RANDOM$$" --arg n "$npaths" --arg imageBytes 1024 --arg maxKiB 60 root) ||
  { tail "$work/logs/build.err" >&2; die "nix build failed"; }
top=$(grep -o '"out":"[^"]*"' <<<"$out" | cut -d'"' -f4)
nix copy --store "$work/store" --to "file://$work/up?compression=xz&secret-key=$work/sk" "$top" 2>>"$work/logs/build.err"
chmod -R u+w "$work/store" && rm -rf "$work/store"
log "built in $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $t0}") s: $(find "$work/up" -maxdepth 1 -name "*.narinfo" | wc -l) paths, xz $(du -sbc "$work"/up/nar/* | tail -1 | awk '{printf "%.1f MiB", $1 / 1048576}')"

servers=(ref nginx proxy)
base_names=()
for i in "${!bases[@]}"; do
  b=base$((i + 1)); [ "$i" = 0 ] && b=base
  base_names+=("$b")
  servers+=("$b")
done
declare -A url port
for s in "${servers[@]}"; do port[$s]=$(free_port); url[$s]=http://127.0.0.1:${port[$s]}; done
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
nginx_conf "$work/ref" "  server { listen 127.0.0.1:${port[ref]}; root $work/up; }"
nginx -e stderr -p "$work/ref/" -c "$work/ref/nginx.conf" 2>"$work/logs/ref.log" &
pid[ref]=$!
wait_http "${url[ref]}/nix-cache-info"

if [ -n "$proxy_bin" ]; then
  cp "$proxy_bin" "$work/proxy.bin"
else
  log "building the proxy"
  (cd "$root" && CGO_ENABLED=0 go build -o "$work/proxy.bin" ./cmd/proxy)
fi
for i in "${!bases[@]}"; do cp "${bases[$i]}" "$work/${base_names[$i]}.bin"; done

start_cache() { # start_cache NAME: an empty cache in front of ref
  local name=$1
  stop "$name"
  rm -rf "$work/cache-$name"
  case $name in
    nginx)
      nginx_conf "$work/cache-nginx" "  proxy_cache_path $work/cache-nginx/c levels=1:2 keys_zone=nix:16m max_size=50g inactive=365d use_temp_path=off;
  upstream nixcache { server 127.0.0.1:${port[ref]}; keepalive 16; }
  server { listen 127.0.0.1:${port[nginx]};
    location / { proxy_pass http://nixcache; proxy_http_version 1.1; proxy_set_header Connection \"\";
      proxy_cache nix; proxy_cache_lock on; proxy_cache_valid 200 365d; proxy_cache_valid 404 1m; } }"
      nginx -e stderr -p "$work/cache-nginx/" -c "$work/cache-nginx/nginx.conf" 2>"$work/logs/nginx.log" &
      ;;
    proxy | base*)
      "$work/$name.bin" serve --listen "127.0.0.1:${port[$name]}" --cache-dir "$work/cache-$name" \
        --upstream "${url[ref]}" --trusted-public-key "$pk" \
        --shutdown-timeout 1s --log-level warn 2>>"$work/logs/$name.log" &
      ;;
  esac
  pid[$name]=$!
  wait_http "${url[$name]}/nix-cache-info"
}

results=$work/results.tsv
: >"$results"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
copy() { # copy NAME: nix copy of the closure from NAME into a fresh store; prints seconds
  local dst=$work/dst t0
  rm -rf "$dst" "$work/xdg-copy"
  t0=$EPOCHREALTIME
  XDG_CACHE_HOME=$work/xdg-copy NIX_CONFIG="$nixconf"$'trusted-public-keys = '"$pk"$'\nrequire-sigs = true\n' \
    nix copy --from "${url[$1]}" --to "$dst" "$top" 2>"$work/logs/copy.err" ||
    { cat "$work/logs/copy.err" >&2; die "nix copy from $1 failed"; }
  awk "BEGIN {printf \"%.3f\", $EPOCHREALTIME - $t0}"
  chmod -R u+w "$dst" && rm -rf "$dst"
}

load() { awk '{print $1}' /proc/loadavg; }
for r in $(seq "$reps"); do
  # Rotate the order: run r starts with server r.
  order=("${servers[@]:$(((r - 1) % ${#servers[@]}))}" "${servers[@]:0:$(((r - 1) % ${#servers[@]}))}")
  log "run $r/$reps (${order[*]}), load $(load)"
  for s in "${order[@]}"; do
    [ "$s" = ref ] || start_cache "$s"
    rec cold "$s" "$(copy "$s")"
    rec warm "$s" "$(copy "$s")"
    rec load "$s" "$(load)"
  done
done
for s in "${servers[@]}"; do stop "$s"; done

med() { awk -F'\t' -v k="$1" -v s="$2" '$1 == k && $2 == s {print $3}' "$results" | sort -g |
  awk '{a[NR] = $1} END {printf "%.2f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
echo
echo "closure of $npaths small paths (xz), $(date -u +%FT%TZ), $(nproc) cores, load average at the start of each copy $(awk -F'\t' '$1 == "load" {print $3}' "$results" | sort -g | sed -n '1p;$p' | paste -sd-)"
echo "$reps runs in rotating order, medians (every value below the table)"
echo
head="| nix copy --from, s |" sep="|---|"
for s in "${servers[@]}"; do head+=" $s |"; sep+="---|"; done
head+=" proxy/nginx | proxy/ref |"; sep+="---|---|"
for b in "${base_names[@]}"; do head+=" $b/nginx |"; sep+="---|"; done
echo "$head"; echo "$sep"
for k in cold warm; do
  line="| $k |"
  for s in "${servers[@]}"; do line+=" $(med "$k" "$s") |"; done
  line+=" $(awk -v a="$(med "$k" proxy)" -v b="$(med "$k" nginx)" 'BEGIN {printf "%.2f", a / b}') |"
  line+=" $(awk -v a="$(med "$k" proxy)" -v b="$(med "$k" ref)" 'BEGIN {printf "%.2f", a / b}') |"
  for b in "${base_names[@]}"; do line+=" $(awk -v a="$(med "$k" "$b")" -v b="$(med "$k" nginx)" 'BEGIN {printf "%.2f", a / b}') |"; done
  echo "$line"
done
echo; echo "every run (kind, server, value):"; cat "$results"
