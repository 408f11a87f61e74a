#!/usr/bin/env bash
# Benchmarks nix-cache-proxy against nginx proxy_cache and against the
# upstream served directly, in one run, over the same signed binary cache.
#
# It builds, with the real Nix client, a closure of small paths (zstd) and
# one large random "image" path (compression none), signs it into a file://
# binary cache, and serves three things on 127.0.0.1:
#
#   ref    the upstream directory served by nginx as static files: the
#          physical reference, and the upstream of the two caches below;
#   nginx  nginx with proxy_cache in front of ref, configured the way people
#          do it for Nix (proxy_cache_lock on, long proxy_cache_valid 200);
#   proxy  nix-cache-proxy in front of ref (built from this tree).
#
# Then, REPS times and in turn for each server, it measures: cold fetch of
# the image NAR by 1 and by 8 clients (TTFB, total, bytes the upstream
# served), the same for 8 clients against a slow upstream (each connection
# limited so that one fetch takes ~8 s), `nix copy` of the closure cold and
# warm, narinfo hits (wrk, 64 connections) and NAR hits (1 and 8 clients),
# and peak RSS (VmHWM; nginx master + all its children). It prints one table:
# median, min–max over the runs, and the ratio of each median to ref's.
#
# A WAN upstream (the same files, each connection limited to --wan-mib-s,
# default 24 MiB/s: one TCP connection over a long path is bound by its
# latency, not by the link) gives the cold1wan rows: the image by curl
# straight from it (ref), through nginx and through the proxy; and the
# wankill rows (proxy only): 4 clients while the upstream's nginx workers
# are killed twice mid-image, each client's bytes compared with the file,
# upstream bytes as the proxy counted them.
#
# The restart rows (proxy only): a prefetch of the image from the WAN
# upstream, the proxy stopped (SIGTERM, and SIGKILL) when about half has
# come, started again on the same cache dir, and the prefetch asked again:
# the time from the first prefetch to the image cached, and the bytes the
# upstream served (its access log) over the image's size.
#
# The recompress rows (--recompress, issue #14): bench/recompress.sh, run
# with the same binary and --reps after the table above: an xz cache the
# real Nix client wrote from shared libraries (compressible, like
# cache.nixos.org's), warm `nix copy` through the proxy (zstd) vs nginx vs
# the upstream directly, the first (cold) client with recompression on vs
# off, and the proxy's CPU per recompressed GiB. It prints its own table:
# its cache is xz, not this script's zstd closure and random image.
#
# The closure rows (issue #22): bench/closure.sh, run with the same binary
# and --reps after the table above: `nix copy --from` of a closure of 1,500
# small paths with references (xz, as cache.nixos.org's), cold and warm,
# from ref, through nginx and through the proxy, in rotating order. It
# prints its own table: its cache is xz, not this script's zstd closure.
#
# The narinfo-rounds rows: wrk -t1 -c32, then -t2 -c32, on one narinfo
# (the image's), 2 rounds each with a warm download of the image (a NAR
# hit) between them; requests/s and p99 per round. Both caches get the
# same footing: nginx worker_processes auto (one per core, 2 here) and the
# proxy's default GOMAXPROCS (one per core); wrk runs on the same cores.
# --own-cores gives the load generator a core of its own, as on a LAN where
# the clients are other machines: wrk (and the clients' curl) on CPU 0, the
# caches and the upstream on the others, nginx with one worker per core
# they have and the proxy with its default GOMAXPROCS, which follows the
# CPUs it may run on. It needs at least 2 CPUs.
#
#   bench/run.sh [--quick] [--reps N] [--image-mib N] [--small N] [--wrk-secs N]
#                [--wan-mib-s N] [--proxy BINARY] [--only ROWS] [--own-cores] [--keep]
#                [--base BINARY]
#
# --quick: 128 MiB image, 2 runs, 3 s of wrk: a few minutes, for iteration.
# Default: 1 GiB image, 3 runs, 10 s of wrk: about 6 minutes on 2 cores.
# --proxy: benchmark that binary instead of building ./cmd/proxy of this tree.
# --only: a comma-separated subset of the rows, among cold, slow, wan,
# wankill, restart, copy, narinfo, rounds, hits, recompress, closure (default:
# all). recompress adds about 4 minutes (256 MiB of libraries; 48 MiB with
# --quick); closure about 5 (1,500 paths built with Nix; 1,000 with --quick).
# --base: the closure rows also measure that binary (say, main before a
# change), in the same rotation.
# Installs nginx, wrk, curl and nix-bin with apt-get when missing (as root).
# Everything lives in one mktemp dir, removed at exit with every process it
# started (--keep keeps the dir, for a look at the logs).
set -euo pipefail

image_mib=1024 reps=3 wrk_secs=10 small=49 keep=0 proxy_bin= wan_mib_s=24 only=all own_cores=0
recompress_args=() closure_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --quick) image_mib=128 reps=2 wrk_secs=3 recompress_args=(--mib 48 --paths 4) closure_args=(--paths 1000) ;;
    --reps) reps=$2; shift ;;
    --image-mib) image_mib=$2; shift ;;
    --small) small=$2; shift ;;
    --wrk-secs) wrk_secs=$2; shift ;;
    --wan-mib-s) wan_mib_s=$2; shift ;;
    --only) only=$2; shift ;;
    --keep) keep=1 ;;
    --own-cores) own_cores=1 ;;
    --proxy) proxy_bin=$(realpath "$2"); shift ;;
    --base) closure_args+=(--base "$(realpath "$2")"); shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
image_bytes=$((image_mib << 20))
# srv and cli prefix the servers' and the clients' commands: empty unless
# --own-cores pins them to their own CPUs.
srv=() cli=() nginx_workers=auto cores_note="$(nproc) cores"
if [ "$own_cores" = 1 ]; then
  ncpu=$(nproc)
  [ "$ncpu" -ge 2 ] || { echo "run.sh: --own-cores needs at least 2 CPUs" >&2; exit 2; }
  command -v taskset >/dev/null || { echo "run.sh: --own-cores needs taskset (util-linux)" >&2; exit 2; }
  cpus=1-$((ncpu - 1))
  [ "$ncpu" -gt 2 ] || cpus=1
  srv=(taskset -c "$cpus") cli=(taskset -c 0)
  # nginx's auto counts the machine's CPUs, not the ones it may run on.
  nginx_workers=$((ncpu - 1))
  cores_note="$ncpu cores: clients on CPU 0, servers on CPU $cpus"
fi
# want ROW: whether --only selects ROW.
want() { [ "$only" = all ] || [[ ",$only," == *",$1,"* ]]; }
servers=(ref nginx proxy)
root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v nix >/dev/null || need+=(nix-bin)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}: run as root, or apt-get install -y ${need[*]}"
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PATH=$PATH:/usr/sbin
[ -n "$proxy_bin" ] || command -v go >/dev/null || die "needs the Go toolchain to build the proxy"
# The recompress rows alone need none of the set-up below.
if [ "$only" = recompress ]; then
  exec "$root/bench/recompress.sh" --reps "$reps" ${proxy_bin:+--proxy "$proxy_bin"} "${recompress_args[@]}"
fi
if [ "$only" = closure ]; then
  exec "$root/bench/closure.sh" --reps "$reps" ${proxy_bin:+--proxy "$proxy_bin"} "${closure_args[@]}"
fi

# --- processes and cleanup -------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/nix-cache-bench.XXXXXX")
mkdir -p "$work/run" "$work/logs"
declare -A pid=() peak=()

# children PID prints PID and every descendant of it.
children() {
  local p=$1 c
  echo "$p"
  for c in $(cat "/proc/$p/task/"*/children 2>/dev/null); do children "$c"; done
}
# hwm PID sums VmHWM (kB) over PID and its descendants.
hwm() {
  local sum=0 p k
  for p in $(children "$1"); do
    k=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${k:-0}))
  done
  echo "$sum"
}
# stop NAME stops a server started by start_bg, keeping its peak RSS.
stop() {
  local name=$1 p=${pid[$1]:-}
  [ -n "$p" ] || return 0
  local k
  k=$(hwm "$p")
  [ "$k" -gt "${peak[$name]:-0}" ] && peak[$name]=$k
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  unset "pid[$name]"
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for name in "${!pid[@]}"; do stop "$name"; done
  if [ "$keep" = 1 ]; then
    echo "kept $work" >&2
  else
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg NAME CMD... runs CMD in the background, logs in $work/logs (on
# the servers' CPUs with --own-cores).
start_bg() {
  local name=$1; shift
  "${srv[@]}" "$@" >"$work/logs/$name.out" 2>>"$work/logs/$name.err" &
  pid[$name]=$!
}
used_ports=" "
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case $used_ports in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
}
wait_http() {
  for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.05; done
  tail -20 "$work"/logs/*.err >&2 || true
  die "no answer from $1"
}

# --- the binary cache ----------------------------------------------------------
export XDG_CACHE_HOME=$work/xdg
nixconf=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nextra-sandbox-paths = /bin /usr /lib? /lib64?\nnarinfo-cache-positive-ttl = 0\nnarinfo-cache-negative-ttl = 0\n'
export NIX_CONFIG=$nixconf

log "building a signed binary cache: $small small paths + root (zstd), one ${image_mib} MiB image (none)"
nix key generate-secret --key-name bench-1 >"$work/sk"
nix key convert-secret-to-public <"$work/sk" >"$work/pk"
pk=$(cat "$work/pk")
cp "$root/bench/closure.nix" "$work/closure.nix"
t0=$EPOCHREALTIME
out=$(nix build 2>>"$work/logs/build.err" --store "$work/store" --no-link --json --max-jobs 2 -f "$work/closure.nix" \
  --argstr nonce "$RANDOM$RANDOM$$" --arg n "$small" --arg imageBytes "$image_bytes" root image)
paths=$(grep -o '"out":"[^"]*"' <<<"$out" | cut -d'"' -f4)
rootpath=$(grep -- '-bench-root$' <<<"$paths")
imagepath=$(grep -- '-bench-image$' <<<"$paths")
nix copy --store "$work/store" --to "file://$work/up?compression=none&secret-key=$work/sk" "$imagepath" 2>>"$work/logs/build.err"
nix copy --store "$work/store" --to "file://$work/up?compression=zstd&secret-key=$work/sk" "$rootpath" 2>>"$work/logs/build.err"
nix path-info --store "$work/store" -r "$rootpath" >"$work/closure.paths"
chmod -R u+w "$work/store" && rm -rf "$work/store"
npaths=$(wc -l <"$work/closure.paths")
image_hash=$(basename "$imagepath" | cut -c1-32)
sed 's|^/nix/store/\(.\{32\}\).*|/\1.narinfo|' "$work/closure.paths" >"$work/narinfo.paths"
image_file_size=$(sed -n 's/^FileSize: //p' "$work/up/$image_hash.narinfo")
log "cache of $npaths paths, image NAR $image_file_size bytes, built in $(awk "BEGIN {printf \"%.0f\", $EPOCHREALTIME - $t0}") s"

# --- servers -------------------------------------------------------------------
port_ref=$(free_port) port_slow=$(free_port) port_nginx=$(free_port) port_proxy=$(free_port) port_wan=$(free_port)
declare -A url=([ref]=http://127.0.0.1:$port_ref [nginx]=http://127.0.0.1:$port_nginx [proxy]=http://127.0.0.1:$port_proxy)
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
# The slow upstream limits each connection so one fetch of the image takes ~8 s
# (1 GiB: 128 MiB/s, about a 1 Gbit/s WAN link).
slow_rate=$((image_bytes / 8))

# nginx_common DIR prints the main-context lines every nginx here shares.
nginx_common() {
  cat <<EOF
$user_line
daemon off;
worker_processes $nginx_workers;
pid $1/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
EOF
}
nginx_temp() {
  cat <<EOF
  client_body_temp_path $1/tmp/body;
  proxy_temp_path $1/tmp/proxy;
  fastcgi_temp_path $1/tmp/fastcgi;
  uwsgi_temp_path $1/tmp/uwsgi;
  scgi_temp_path $1/tmp/scgi;
EOF
}

# ref: the upstream directory as static files. NAR requests are logged with
# their byte counts: that is how many bytes "the upstream" served.
mkdir -p "$work/ref/tmp"
{
  nginx_common "$work/ref"
  cat <<EOF
http {
$(nginx_temp "$work/ref")
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  types { text/x-nix-narinfo narinfo; }
  default_type application/octet-stream;
  log_format bytes '\$request_uri \$status \$body_bytes_sent';
  server {
    listen 127.0.0.1:$port_ref;
    root $work/up;
    location /nar/ { access_log $work/ref/nar.log bytes; }
    location = /_status { stub_status; }
  }
  server {
    listen 127.0.0.1:$port_slow;
    root $work/up;
    location /nar/ { access_log $work/ref/nar.log bytes; limit_rate $slow_rate; }
  }
  server {
    listen 127.0.0.1:$port_wan;
    root $work/up;
    location /nar/ { access_log $work/ref/nar.log bytes; limit_rate ${wan_mib_s}m; }
  }
}
EOF
} >"$work/ref/nginx.conf"
touch "$work/ref/nar.log"

start_ref() {
  start_bg ref nginx -e stderr -p "$work/ref/" -c "$work/ref/nginx.conf"
  wait_http "${url[ref]}/nix-cache-info"
}

# nginx proxy_cache, as the NixOS wiki and blog posts set it up in front of
# cache.nixos.org or cachix.
write_nginx_conf() {
  local up=$1
  mkdir -p "$work/nginx/tmp"
  {
    nginx_common "$work/nginx"
    cat <<EOF
http {
$(nginx_temp "$work/nginx")
  access_log off;
  # Debian's nginx.conf also sets tcp_nopush on: with sendfile, that stalls
  # proxy_cache hits of mid-size files ~40 ms each for Nix's libcurl
  # (BENCHMARKS.md). It is left off here, to measure nginx at its best.
  sendfile on;
  keepalive_requests 1000000;
  proxy_cache_path $work/nginx/cache levels=1:2 keys_zone=nix:16m max_size=50g inactive=365d use_temp_path=off;
  upstream nixcache {
    server 127.0.0.1:$up;
    keepalive 16;
  }
  server {
    listen 127.0.0.1:$port_nginx;
    location / {
      proxy_pass http://nixcache;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache nix;
      proxy_cache_lock on;
      proxy_cache_valid 200 365d;
      proxy_cache_valid 404 1m;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
    }
  }
}
EOF
  } >"$work/nginx/nginx.conf"
}
# start_cache NAME [UPSTREAM_PORT [keep]]: a cache (nginx or proxy) on an
# empty cache dir (or the one it had, with keep), in front of ref (or the
# slow or WAN port).
start_cache() {
  local name=$1 up=${2:-$port_ref} keep_dir=${3:-}
  stop "$name"
  case $name in
    nginx)
      [ -n "$keep_dir" ] || rm -rf "$work/nginx/cache"
      write_nginx_conf "$up"
      start_bg nginx nginx -e stderr -p "$work/nginx/" -c "$work/nginx/nginx.conf"
      ;;
    proxy)
      [ -n "$keep_dir" ] || rm -rf "$work/proxy-cache"
      start_bg proxy "$work/nix-cache-proxy" serve --listen "127.0.0.1:$port_proxy" \
        --cache-dir "$work/proxy-cache" --upstream "http://127.0.0.1:$up" \
        --trusted-public-key "$pk" --shutdown-timeout 1s --log-level warn
      ;;
  esac
  wait_http "${url[$name]}/nix-cache-info"
}
reset() { [ "$1" = ref ] || start_cache "$@"; }

if [ -n "$proxy_bin" ]; then
  cp "$proxy_bin" "$work/nix-cache-proxy"
else
  log "building the proxy"
  (cd "$root" && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy)
fi
start_ref
start_cache nginx
start_cache proxy

# --- measurements ------------------------------------------------------------
results=$work/results.tsv
: >"$results"
rec() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$results"; }
fdiv() { awk "BEGIN {printf \"%.6f\", $1 / $2}"; }
# upstream_bytes waits until ref has no response in progress (a request is
# logged when it ends, and with limit_rate that is after its client has
# every byte), then sums the NAR bytes it has served.
# Workers killed mid-response (wan_kill) leave their connections counted
# as writing in nginx's shared counters for good: writing_idle is the count
# when nothing but the status request is in progress.
writing_idle=1
writing() { curl -fsS "http://127.0.0.1:$port_ref/_status" | awk '/^Reading/ {print $4}'; }
upstream_bytes() {
  for _ in $(seq 300); do
    [ "$(writing)" -le "$writing_idle" ] && break
    sleep 0.1
  done
  awk '{s += $3} END {printf "%.0f", s}' "$work/ref/nar.log"
}
# nar_path NAME prints the image NAR's URL path as NAME's narinfo names it
# (the proxy rewrites it), fetching the narinfo through NAME.
nar_path() {
  local u
  u=$(curl -fsS "${url[$1]}/$image_hash.narinfo" | sed -n 's/^URL: //p')
  [ -n "$u" ] || die "$1: no narinfo for the image"
  echo "/$u"
}

# fetch_many NAME N PATH: N clients GET PATH at once. Sets wall (s) and
# ttfb_max, ttfb_med (s); checks every client got 200 and the whole file.
fetch_many() {
  local name=$1 n=$2 path=$3 i t0 clients=()
  t0=$EPOCHREALTIME
  for i in $(seq "$n"); do
    curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_starttransfer}\n' \
      "${url[$name]}$path" >"$work/client.$i" &
    clients+=($!)
  done
  wait "${clients[@]}" || true
  wall=$(awk "BEGIN {printf \"%.6f\", $EPOCHREALTIME - $t0}")
  for i in $(seq "$n"); do
    read -r code size _ <"$work/client.$i"
    [ "$code" = 200 ] && [ "$size" = "$image_file_size" ] ||
      die "$name: client $i got $code with $size bytes of $path, want 200 with $image_file_size"
  done
  ttfb_max=$(cat "$work"/client.* | awk '$3 > m {m = $3} END {print m}')
  ttfb_med=$(cat "$work"/client.* | awk '{print $3}' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  rm -f "$work"/client.*
}

cold() { # cold SUFFIX CLIENTS [UPSTREAM_PORT]
  local suffix=$1 n=$2 up=${3:-$port_ref} s path before
  for s in "${servers[@]}"; do
    reset "$s" "$up"
    path=$(nar_path "$s")
    [ "$s" = ref ] && url[ref]=http://127.0.0.1:$up
    before=$(upstream_bytes)
    fetch_many "$s" "$n" "$path"
    url[ref]=http://127.0.0.1:$port_ref
    rec "cold$suffix.ttfb" "$s" "$ttfb_max"
    rec "cold$suffix.total" "$s" "$wall"
    rec "cold$suffix.upstream" "$s" "$(fdiv "$(($(upstream_bytes) - before))" "$image_file_size")"
  done
}

# proxy_fetched prints the NAR bytes the proxy counted from its upstream.
proxy_fetched() {
  curl -fsS "${url[proxy]}/metrics" | awk '/^nix_cache_proxy_upstream_fetched_bytes_total/ {s += $2} END {printf "%.0f", s}'
}

# wan_kill: 4 clients fetch the image cold through the proxy from the WAN
# upstream, whose nginx workers are killed (the master starts new ones)
# at 1/3 and 2/3 of the time a 4-connection fetch takes. Every client must
# get the file's exact bytes.
wan_kill() {
  local n=4 i t0 want clients=() w per
  reset proxy "$port_wan"
  path=$(nar_path proxy)
  want=$(sha256sum <"$work/up$(nar_path ref)" | cut -d' ' -f1)
  per=$(awk "BEGIN {print $image_bytes / ($wan_mib_s * 1048576 * 4) / 3}")
  t0=$EPOCHREALTIME
  for i in $(seq "$n"); do
    (curl -sS "${url[proxy]}$path" | sha256sum | cut -d' ' -f1 >"$work/kill.$i") &
    clients+=($!)
  done
  for _ in 1 2; do
    sleep "$per"
    for w in $(cat "/proc/${pid[ref]}/task/"*/children 2>/dev/null); do kill -KILL "$w" 2>/dev/null || true; done
  done
  wait "${clients[@]}" || true
  rec wankill.total proxy "$(awk "BEGIN {printf \"%.6f\", $EPOCHREALTIME - $t0}")"
  for i in $(seq "$n"); do
    [ "$(cat "$work/kill.$i")" = "$want" ] || die "wan_kill: client $i got other bytes than the image"
  done
  rm -f "$work"/kill.*
  rec wankill.upstream proxy "$(fdiv "$(proxy_fetched)" "$image_file_size")"
  # Every client has the image, so the proxy has fetched it all: what
  # nginx still counts as writing are the killed workers' connections.
  sleep 1
  writing_idle=$(writing)
}

# restart_prefetch SIGNAL: a prefetch of the image through the proxy from
# the WAN upstream; when the proxy has about half of it, the proxy gets
# SIGNAL, is started again on the same cache dir, and the prefetch is asked
# again and followed to the end. Records the time from the first prefetch
# to the image cached, and the upstream's bytes (its access log: what it
# sent, whoever counted it) over the image.
restart_prefetch() {
  local sig=$1 key=restart${1,,} t0 before p
  reset proxy "$port_wan"
  before=$(upstream_bytes)
  t0=$EPOCHREALTIME
  curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    -d "{\"paths\": [\"$imagepath\"]}" "${url[proxy]}/_/prefetch"
  for _ in $(seq 6000); do
    [ "$(proxy_fetched)" -ge $((image_file_size / 2)) ] && break
    sleep 0.01
  done
  p=${pid[proxy]}
  kill -"$sig" "$p"
  for _ in $(seq 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  wait "$p" 2>/dev/null || true
  unset "pid[proxy]"
  start_cache proxy "$port_wan" keep
  "$work/nix-cache-proxy" prefetch --server "${url[proxy]}" "$imagepath" >>"$work/logs/prefetch.out" 2>&1 ||
    die "restart_prefetch $sig: the prefetch after the restart failed (see $work/logs/prefetch.out)"
  rec "$key.total" proxy "$(awk "BEGIN {printf \"%.6f\", $EPOCHREALTIME - $t0}")"
  rec "$key.upstream" proxy "$(fdiv "$(($(upstream_bytes) - before))" "$image_file_size")"
}

nix_copy() { # nix_copy MODE (cold: every cache emptied first)
  local mode=$1 s t0 dst
  for s in "${servers[@]}"; do
    [ "$mode" = cold ] && reset "$s"
    dst=$work/dst
    rm -rf "$dst" "$work/xdg-copy"
    t0=$EPOCHREALTIME
    if ! XDG_CACHE_HOME=$work/xdg-copy NIX_CONFIG="$nixconf"$'trusted-public-keys = '"$pk"$'\nrequire-sigs = true\n' \
      nix copy --from "${url[$s]}" --to "$dst" "$rootpath" 2>"$work/logs/nix-copy.err"; then
      cat "$work/logs/nix-copy.err" >&2
      die "nix copy from $s failed"
    fi
    rec "copy.$mode" "$s" "$(awk "BEGIN {printf \"%.6f\", $EPOCHREALTIME - $t0}")"
    chmod -R u+w "$dst" && rm -rf "$dst"
  done
}

cat >"$work/narinfo.lua" <<'EOF'
-- Cycles through every narinfo of the closure, one request per call.
local reqs, i = {}, 0
function init(args)
  for line in io.lines(args[1]) do reqs[#reqs + 1] = wrk.format("GET", line) end
end
function request()
  i = i % #reqs + 1
  return reqs[i]
end
EOF
# cpu_ticks PID sums user+system CPU ticks of PID and its descendants.
cpu_ticks() {
  local sum=0 p t
  for p in $(children "$1"); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
clk_tck=$(getconf CLK_TCK)
narinfo_hits() {
  local s out c0 c1 n
  for s in "${servers[@]}"; do
    while read -r p; do curl -fsS -o /dev/null "${url[$s]}$p"; done <"$work/narinfo.paths"
    c0=$(cpu_ticks "${pid[$s]}")
    out=$("${cli[@]}" wrk -t2 -c64 -d"${wrk_secs}s" --latency -s "$work/narinfo.lua" "${url[$s]}" -- "$work/narinfo.paths")
    c1=$(cpu_ticks "${pid[$s]}")
    echo "$out" >>"$work/logs/wrk.$s.txt"
    grep -q 'Non-2xx' <<<"$out" && { echo "$out" >&2; die "$s: wrk saw errors"; }
    # Server CPU per request does not depend on what else the machine runs.
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rec narinfo.cpu "$s" "$(fdiv "$(((c1 - c0) * 1000000))" "$((n * clk_tck))")"
    rec narinfo.rps "$s" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
    rec narinfo.p99 "$s" "$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
      print (u == "us" ? v / 1000 : u == "s" ? v * 1000 : v)}' <<<"$out")"
  done
}

# wrk_rec KEY NAME WRK_OUTPUT records requests/s and p99 (ms) of a wrk run.
wrk_rec() {
  grep -q 'Non-2xx\|Socket errors' <<<"$3" && { echo "$3" >&2; die "$2: wrk saw errors"; }
  rec "$1.rps" "$2" "$(awk '/^Requests\/sec:/ {print $2}' <<<"$3")"
  rec "$1.p99" "$2" "$(awk '$1 == "99%" {v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    print (u == "us" ? v / 1000 : u == "s" ? v * 1000 : v)}' <<<"$3")"
}

# narinfo_rounds: per wrk shape (-t1 -c32, -t2 -c32) and per cache, two
# rounds of wrk on the image's narinfo with a warm download of the image
# between them: whatever serving a large NAR leaves behind shows in the
# second round. Each cache starts empty and is warmed first.
narinfo_rounds() {
  local s t path out round
  for s in nginx proxy; do
    reset "$s"
    path=$(nar_path "$s")
    curl -fsS -o /dev/null "${url[$s]}$path"
    # nginx does not fsync its cache files: the kernel writes the image's
    # 512 MiB+ back 30 s later (vm.dirty_expire_centisecs), in the middle
    # of whatever runs then, which was the proxy's rounds. Flushed here,
    # each cache's writes are done before its own rounds.
    [ "${BENCH_ROUNDS_SYNC:-1}" = 0 ] || sync
    for t in 1 2; do
      for round in 1 2; do
        echo "== $(date +%T.%N) $s t$t round $round" >>"$work/logs/wrk-rounds.$s.txt"
        out=$("${cli[@]}" wrk -t"$t" -c32 -d"${wrk_secs}s" --latency "${url[$s]}/$image_hash.narinfo")
        echo "$out" >>"$work/logs/wrk-rounds.$s.txt"
        wrk_rec "nrt${t}r$round" "$s" "$out"
        [ "$round" = 2 ] || curl -fsS -o /dev/null "${url[$s]}$path"
      done
    done
  done
}

nar_hits() {
  local s path n
  for s in "${servers[@]}"; do
    path=$(nar_path "$s")
    curl -fsS -o /dev/null "${url[$s]}$path" # make sure it is a hit
    for n in 1 8; do
      fetch_many "$s" "$n" "$path"
      rec "hit$n.mibs" "$s" "$(fdiv "$((n * image_file_size))" "$(awk "BEGIN {print $wall * 1048576}")")"
    done
  done
}

for r in $(seq "$reps"); do
  if want cold; then
    log "run $r/$reps: cold image fetch, 1 and 8 clients"
    cold 1 1
    cold 8 8
  fi
  if want slow; then
    log "run $r/$reps: cold image fetch, 8 clients, slow upstream"
    cold 8slow 8 "$port_slow"
  fi
  if want wan; then
    log "run $r/$reps: cold image fetch, 1 client, WAN upstream (${wan_mib_s} MiB/s per connection)"
    cold 1wan 1 "$port_wan"
  fi
  if want wankill; then
    log "run $r/$reps: cold image through the proxy, WAN upstream workers killed twice"
    wan_kill
  fi
  if want restart; then
    log "run $r/$reps: prefetch through the proxy from the WAN upstream, proxy restarted half way (SIGTERM, SIGKILL)"
    restart_prefetch TERM
    restart_prefetch KILL
  fi
  if want copy; then
    log "run $r/$reps: nix copy, cold and warm"
    nix_copy cold
    nix_copy warm
  fi
  if want narinfo; then
    log "run $r/$reps: narinfo hits (wrk, ${wrk_secs}s)"
    narinfo_hits
  fi
  if want rounds; then
    log "run $r/$reps: narinfo hits on one narinfo, 2 rounds around a NAR hit (wrk -t1 and -t2, -c32, ${wrk_secs}s)"
    narinfo_rounds
  fi
  if want hits; then
    log "run $r/$reps: NAR hits, 1 and 8 clients"
    nar_hits
  fi
done
for s in "${servers[@]}"; do stop "$s"; done
for s in "${servers[@]}"; do rec rss "$s" "$(fdiv "${peak[$s]}" 1024)"; done

# --- report -------------------------------------------------------------------
cat >"$work/metrics" <<EOF
narinfo.rps	narinfo hits, requests/s (wrk -c64)	req/s	high
narinfo.p99	narinfo hits, p99 latency	ms	low
narinfo.cpu	narinfo hits, server CPU per request	µs	low
hit1.mibs	NAR hit, 1 client	MiB/s	high
hit8.mibs	NAR hit, 8 clients (aggregate)	MiB/s	high
cold1.ttfb	cold image, 1 client: time to first byte	s	low
cold1.total	cold image, 1 client: total	s	low
cold1.upstream	cold image, 1 client: upstream bytes	× image	low
cold8.ttfb	cold image, 8 clients: slowest first byte	s	low
cold8.total	cold image, 8 clients: until the last is done	s	low
cold8.upstream	cold image, 8 clients: upstream bytes	× image	low
cold8slow.ttfb	slow upstream, 8 clients: slowest first byte	s	low
cold8slow.total	slow upstream, 8 clients: until the last is done	s	low
cold8slow.upstream	slow upstream, 8 clients: upstream bytes	× image	low
cold1wan.total	WAN upstream, 1 client: total	s	low
cold1wan.upstream	WAN upstream, 1 client: upstream bytes	× image	low
wankill.total	WAN upstream workers killed twice, 4 clients: total	s	low
wankill.upstream	WAN upstream workers killed twice: upstream bytes	× image	low
restartterm.total	WAN prefetch, proxy SIGTERM half way and started again: total	s	low
restartterm.upstream	WAN prefetch, proxy SIGTERM half way: upstream bytes	× image	low
restartkill.total	WAN prefetch, proxy SIGKILL half way and started again: total	s	low
restartkill.upstream	WAN prefetch, proxy SIGKILL half way: upstream bytes	× image	low
copy.cold	nix copy of the closure, cold	s	low
copy.warm	nix copy of the closure, warm	s	low
nrt1r1.rps	one narinfo, wrk -t1 -c32, round 1	req/s	high
nrt1r1.p99	one narinfo, wrk -t1 -c32, round 1: p99	ms	low
nrt1r2.rps	one narinfo, wrk -t1 -c32, round 2 (after a NAR hit)	req/s	high
nrt1r2.p99	one narinfo, wrk -t1 -c32, round 2: p99	ms	low
nrt2r1.rps	one narinfo, wrk -t2 -c32, round 1	req/s	high
nrt2r1.p99	one narinfo, wrk -t2 -c32, round 1: p99	ms	low
nrt2r2.rps	one narinfo, wrk -t2 -c32, round 2 (after a NAR hit)	req/s	high
nrt2r2.p99	one narinfo, wrk -t2 -c32, round 2: p99	ms	low
rss	peak RSS over the run (VmHWM)	MiB	low
EOF
echo
echo "nix-cache-proxy vs nginx proxy_cache vs the upstream served directly (ref)"
echo "$(date -u +%F), $cores_note, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $reps runs; $npaths paths, image ${image_mib} MiB; cells: median (min–max) and ×ref = median / ref's median"
echo
awk -F'\t' -v servers="${servers[*]}" '
  function fmt(v) { return v >= 100 ? sprintf("%.0f", v) : v >= 10 ? sprintf("%.1f", v) : v >= 0.1 ? sprintf("%.2f", v) : sprintf("%.3f", v) }
  function median(key,   n, a, i, j, t) {
    n = split(vals[key], a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    lo[key] = a[1]; hi[key] = a[n]
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  FNR == NR { vals[$1 SUBSEP $2] = vals[$1 SUBSEP $2] " " $3; next }
  {
    key = $1; label[key] = $2; unit[key] = $3; order[++nm] = key
  }
  END {
    ns = split(servers, sv, " ")
    printf "| %s | unit | ref | nginx | ×ref | proxy | ×ref | proxy/nginx |\n", "measure"
    print "|---|---|---|---|---|---|---|---|"
    for (m = 1; m <= nm; m++) {
      key = order[m]
      any = 0
      for (s = 1; s <= ns; s++) if ((key SUBSEP sv[s]) in vals) any = 1
      if (!any) continue # a row --only left out
      line = sprintf("| %s | %s |", label[key], unit[key])
      for (s = 1; s <= ns; s++) {
        k = key SUBSEP sv[s]
        if (!(k in vals)) { med[s] = 0; line = line " – |"; if (s > 1) line = line " – |"; continue }
        med[s] = median(k)
        cell = fmt(med[s])
        if (lo[k] != hi[k]) cell = cell " (" fmt(lo[k]) "–" fmt(hi[k]) ")"
        line = line " " cell " |"
        if (s > 1) line = line " " (med[1] > 0 ? sprintf("%.2f", med[s] / med[1]) : "–") " |"
      }
      line = line " " (med[2] > 0 ? sprintf("%.2f", med[3] / med[2]) : "–") " |"
      print line
    }
  }' "$results" "$work/metrics"

echo
awk -F'\t' '
  { v[$1 "," $2] = v[$1 "," $2] " " $3 }
  function med(k,   n, a, i, j, t) {
    n = split(v[k], a, " ")
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    mx[k] = a[n]
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function target(ok, what) { printf "%s  %s\n", ok ? "met   " : "MISSED", what }
  function has(k) { return k in v }
  # worst(K, HIGH): the worst over the runs of proxy/nginx for key K, run by
  # run (HIGH: higher is better, so the lowest ratio; else the highest).
  function worst(k, high,   n, m, a, b, i, r, w) {
    n = split(v[k ",proxy"], a, " "); m = split(v[k ",nginx"], b, " ")
    w = high ? 1e9 : 0
    for (i = 1; i <= n && i <= m; i++) {
      r = a[i] / b[i]
      if (high ? r < w : r > w) w = r
    }
    return w
  }
  END {
    if (has("narinfo.rps,proxy")) {
      r = med("narinfo.rps,proxy") / med("narinfo.rps,nginx")
      target(r >= 1.0, sprintf("narinfo hits >= 1.0x nginx requests/s: %.2fx", r))
      printf "        (server CPU per narinfo hit: proxy %.1f µs, nginx %.1f µs)\n", med("narinfo.cpu,proxy"), med("narinfo.cpu,nginx")
    }
    if (has("nrt1r1.rps,proxy")) {
      split("nrt1r1 nrt1r2 nrt2r1 nrt2r2", keys, " ")
      lo = 1e9; hi = 0; line = ""
      for (i = 1; i <= 4; i++) {
        r = worst(keys[i] ".rps", 1); if (r < lo) lo = r
        p = worst(keys[i] ".p99", 0); if (p > hi) hi = p
        line = line sprintf(" %s %.2fx/p99 %.2fx", keys[i], r, p)
      }
      target(lo >= 1.0, sprintf("one narinfo, every round of wrk -t1/-t2 -c32 >= 1.0x nginx requests/s: worst %.2fx", lo))
      target(hi <= 2.0, sprintf("... with p99 within 2x nginx'"'"'s: worst %.2fx", hi))
      printf "       %s\n", line
    }
    if (has("hit1.mibs,proxy")) {
      r = med("hit1.mibs,proxy") / med("hit1.mibs,nginx")
      target(r >= 0.9, sprintf("NAR hit throughput, 1 client, >= 0.9x nginx: %.2fx", r))
      r = med("hit8.mibs,proxy") / med("hit8.mibs,nginx")
      target(r >= 0.9, sprintf("NAR hit throughput, 8 clients, >= 0.9x nginx: %.2fx", r))
    }
    if (has("cold8.upstream,proxy") && has("cold8slow.upstream,proxy")) {
      med("cold8.upstream,proxy"); med("cold8slow.upstream,proxy")
      m = mx["cold8.upstream,proxy"] > mx["cold8slow.upstream,proxy"] ? mx["cold8.upstream,proxy"] : mx["cold8slow.upstream,proxy"]
      target(m > 0.999 && m < 1.001, sprintf("8 cold clients cost the upstream 1x the image: at most %.3fx in every run", m))
    }
    if (has("cold1wan.total,proxy")) {
      r = med("cold1wan.total,ref") / med("cold1wan.total,proxy")
      r2 = med("cold1wan.total,nginx") / med("cold1wan.total,proxy")
      target(r >= 3.5 && r2 >= 3.5, sprintf("cold image over the WAN >= 3.5x faster than curl direct (%.2fx) and nginx (%.2fx)", r, r2))
      m = med("cold1wan.upstream,proxy")
      target(mx["cold1wan.upstream,proxy"] <= 1.02, sprintf("... costing the upstream <= 1.02x the image: at most %.3fx", mx["cold1wan.upstream,proxy"]))
    }
    if (has("wankill.upstream,proxy")) {
      m = med("wankill.upstream,proxy")
      target(mx["wankill.upstream,proxy"] <= 1.1, sprintf("upstream workers killed mid-image: every client has the image, upstream <= 1.1x: at most %.3fx", mx["wankill.upstream,proxy"]))
    }
    if (has("restartterm.upstream,proxy")) {
      med("restartterm.upstream,proxy"); med("restartkill.upstream,proxy")
      target(mx["restartterm.upstream,proxy"] <= 1.1, sprintf("proxy SIGTERM mid-prefetch, started again: upstream <= 1.1x the image: at most %.3fx", mx["restartterm.upstream,proxy"]))
      target(mx["restartkill.upstream,proxy"] <= 1.1, sprintf("proxy SIGKILL mid-prefetch, started again: upstream <= 1.1x the image: at most %.3fx", mx["restartkill.upstream,proxy"]))
    }
    if (has("rss,proxy")) {
      r = med("rss,proxy")
      target(r < 100, sprintf("proxy peak RSS < 100 MB: %.1f MiB", r))
    }
  }' "$results"

if want recompress; then
  echo
  log "recompress rows: bench/recompress.sh --reps $reps ${recompress_args[*]}"
  "$root/bench/recompress.sh" --reps "$reps" --proxy "$work/nix-cache-proxy" "${recompress_args[@]}"
fi

if want closure; then
  echo
  log "closure rows: bench/closure.sh --reps $reps ${closure_args[*]}"
  "$root/bench/closure.sh" --reps "$reps" --proxy "$work/nix-cache-proxy" "${closure_args[@]}"
fi
