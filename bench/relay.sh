#!/usr/bin/env bash
# Benchmarks the relay (nix-cache-proxy relay, docs/relay.md) over a real
# network: two network namespaces joined by a veth pair, the LAN in one (a
# warm nix-cache-proxy serve, with an nginx upstream) and the laptop in the
# other (the relay, the real Nix client, and an nginx "upstream" on its
# loopback standing for cache.nixos.org). Both nginx serve the same signed
# binary cache: a closure of SMALL small paths (zstd) and one image (none).
#
# Rows, REPS runs each (median, min-max), the ratio of medians and the
# load average when they were taken:
#   offlan   the cache's packets dropped (nftables in the LAN namespace):
#            nix-store -r of the small closure with substituters
#            [relay, upstream] vs [upstream] alone, Nix's default
#            download-attempts (goal <= 1.1x); one run right after the
#            drop, before the relay noticed; and one run of
#            [cache, upstream] with README's connect-timeout = 3, without
#            the relay, for scale.
#   onlan    the same closure, the LAN cache warm: through the relay vs
#            straight from the cache (goal <= 1.05x).
#   nar      the image NAR with curl: through the relay vs straight from
#            the cache, MiB/s (goal >= 0.9x); and the image and the
#            closure again with the cache's side of the veth at 1 Gbit/s
#            (tc tbf), a wired LAN's speed: unshaped, the veth measures
#            the CPU of the copy, not a network.
#   rejoin   the cache's link down until the relay answers 404, then up:
#            time to the first narinfo lookup forwarded (goal <= 5 s); and
#            the same with packets dropped then let through (no change for
#            the system to tell: the relay's back-off alone).
#   rss      the relay's VmRSS and VmHWM at the end, and its CPU while idle
#            on the LAN for 30 s (goal <= 15 MB, ~0).
#
#   bench/relay.sh [--small N] [--image-mib N] [--reps N] [--proxy BINARY] [--keep]
#
# Defaults: 1000 small paths, 256 MiB image, 3 runs: about 10 minutes on
# 2 cores, most of it building the closure. Needs root (namespaces), and
# installs iproute2, nftables, nginx, curl and nix-bin when missing.
set -euo pipefail

small=1000 image_mib=256 reps=3 keep=0 proxy_bin=
while [ $# -gt 0 ]; do
  case $1 in
    --small) small=$2; shift ;;
    --image-mib) image_mib=$2; shift ;;
    --reps) reps=$2; shift ;;
    --proxy) proxy_bin=$(realpath "$2"); shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "relay.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
root=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '== %s\n' "$*" >&2; }
die() { printf 'relay.sh: %s\n' "$*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
"$root/.ci/install-debs" ip:iproute2 nft:nftables nginx:nginx curl:curl nix:nix-bin

work=$(mktemp -d /tmp/relay-bench.XXXXXX)
pids=()
tag=$$
lan=relaybench-lan-$tag laptop=relaybench-laptop-$tag
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$lan" 2>/dev/null || true
  ip netns del "$laptop" 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "kept $work" >&2
  else chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"; fi
}
trap cleanup EXIT
mkdir -p "$work/logs"
PROXY_BIN=$proxy_bin
. "$root/bench/lib.sh"
proxy_binary
bin=$work/nix-cache-proxy

# --- the binary cache ----------------------------------------------------------
export XDG_CACHE_HOME=$work/xdg
nixconf=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\nextra-sandbox-paths = /bin /usr /lib? /lib64?\n'
export NIX_CONFIG=$nixconf
log "building a signed binary cache: $small small paths (zstd), one ${image_mib} MiB image (none)"
nix key generate-secret --key-name bench-1 >"$work/sk"
pk=$(nix key convert-secret-to-public <"$work/sk")
out=$(nix build 2>>"$work/logs/build.err" --store "$work/store" --no-link --json --max-jobs 2 -f "$root/bench/closure.nix" \
  --argstr nonce "$RANDOM$RANDOM$$" --arg n "$small" --arg imageBytes "$((image_mib << 20))" root image)
paths=$(grep -o '"out":"[^"]*"' <<<"$out" | cut -d'"' -f4)
rootpath=$(grep -- '-bench-root$' <<<"$paths")
imagepath=$(grep -- '-bench-image$' <<<"$paths")
nix copy --store "$work/store" --to "file://$work/up?compression=none&secret-key=$work/sk" "$imagepath" 2>>"$work/logs/build.err"
nix copy --store "$work/store" --to "file://$work/up?compression=zstd&secret-key=$work/sk" "$rootpath" 2>>"$work/logs/build.err"
closure=$(nix path-info --store "$work/store" -r "$rootpath" | grep -- "-bench-small-$((small - 1))$")
npaths=$(nix path-info --store "$work/store" -r "$closure" | wc -l)
chmod -R u+w "$work/store" && rm -rf "$work/store"
image_hash=$(basename "$imagepath" | cut -c1-32)
closure_hash=$(basename "$closure" | cut -c1-32)
log "closure of $npaths paths; image $(sed -n 's/^FileSize: //p' "$work/up/$image_hash.narinfo") bytes"

# --- the network ------------------------------------------------------------------
cache_ip=10.231.2.1 laptop_ip=10.231.2.2
ip netns add "$lan"
ip netns add "$laptop"
ip -n "$lan" link set lo up
ip -n "$laptop" link set lo up
ip link add veth-lan netns "$lan" type veth peer name veth-laptop netns "$laptop"
ip -n "$lan" addr add "$cache_ip/30" dev veth-lan
ip -n "$laptop" addr add "$laptop_ip/30" dev veth-laptop
ip -n "$lan" link set veth-lan up
ip -n "$laptop" link set veth-laptop up
in_lan() { ip netns exec "$lan" "$@"; }
in_laptop() { ip netns exec "$laptop" "$@"; }

# nginx_in NS NAME ADDR: nginx in NS serving the cache directory on ADDR.
nginx_in() {
  cat >"$work/$2.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $work/$2.pid;
error_log $work/logs/$2.err;
events { worker_connections 1024; }
http { access_log off; server { listen $3; root $work/up; } }
EOF
  ip netns exec "$1" nginx -c "$work/$2.conf" &
  pids+=($!)
}
nginx_in "$lan" nginx-lan 127.0.0.1:8080
nginx_in "$laptop" nginx-laptop 127.0.0.1:8080
# Started with ip netns exec itself, not a shell function: $! is then the
# process (ip execs it), for kill and /proc/PID.
ip netns exec "$lan" "$bin" serve --listen "$cache_ip:5575" --cache-dir "$work/lancache" --upstream http://127.0.0.1:8080 \
  --trusted-public-key "$pk" --log-level warn 2>>"$work/logs/cache.err" &
pids+=($!)
ip netns exec "$laptop" "$bin" relay --cache "http://$cache_ip:5575" --listen 127.0.0.1:5576 2>>"$work/logs/relay.err" &
relay_pid=$!
pids+=($relay_pid)
cache_url=http://$cache_ip:5575 relay_url=http://127.0.0.1:5576 upstream_url=http://127.0.0.1:8080

# lookup: the status of the closure's narinfo through the relay.
lookup() { in_laptop curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$relay_url/$closure_hash.narinfo" || true; }
wait_for() { # WHAT TIMEOUT_S CMD...: until CMD succeeds
  local what=$1 limit=$2; shift 2
  local t0=$EPOCHREALTIME
  until "$@"; do
    awk "BEGIN {exit !($EPOCHREALTIME - $t0 > $limit)}" && die "waited ${limit}s for $what"
    sleep 0.02
  done
}
forwarding() { [ "$(lookup)" = 200 ]; }
answering_itself() { [ "$(lookup)" = 404 ]; }
wait_for "the relay to forward" 30 forwarding

# realise SUBSTITUTER... [-- NIX.CONF LINES]: nix-store -r of the closure in
# the laptop, into a new store; prints the seconds it took.
realise() {
  local subs=() extra=""
  while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; extra=$(printf '%s\n' "$@"); break; fi
    subs+=("$1"); shift
  done
  local d
  d=$(mktemp -d "$work/client.XXXXXX")
  local t0=$EPOCHREALTIME
  XDG_CACHE_HOME=$d/xdg NIX_CONFIG="$nixconf"$'narinfo-cache-negative-ttl = 0\nnarinfo-cache-positive-ttl = 0\nrequire-sigs = true\ntrusted-public-keys = '"$pk"$'\nsubstituters = '"${subs[*]}"$'\n'"$extra" \
    in_laptop nix-store --store "$d/store" -r "$closure" >/dev/null 2>>"$work/logs/realise.err" ||
    die "nix-store -r with ${subs[*]} failed (logs/realise.err)"
  awk "BEGIN {printf \"%.3f\", $EPOCHREALTIME - $t0}"
  chmod -R u+w "$d" && rm -rf "$d"
}

# --- recording ---------------------------------------------------------------------
declare -A vals
rec() { vals[$1]+="$2 "; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
declare -A loads
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
range() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END {printf "%s-%s", lo, hi}'; }

# --- on the LAN ---------------------------------------------------------------------
log "warming the LAN cache (closure and image)"
realise "$cache_url" >/dev/null
image_url=$(in_laptop curl -fsS "$cache_url/$image_hash.narinfo" | sed -n 's/^URL: //p')
in_laptop curl -fsS -o /dev/null "$cache_url/$image_url"

log "on the LAN: the closure through the relay vs straight from the cache, $reps runs"
for i in $(seq "$reps"); do
  # ABBA: neither goes first every time.
  if [ $((i % 2)) = 1 ]; then
    rec onlan.cache "$(realise "$cache_url")"
    rec onlan.relay "$(realise "$relay_url")"
  else
    rec onlan.relay "$(realise "$relay_url")"
    rec onlan.cache "$(realise "$cache_url")"
  fi
done
loads[onlan]=$(load)

log "on the LAN: the image NAR through the relay vs straight from the cache"
mibs() { in_laptop curl -fsS -o /dev/null -w '%{speed_download}' "$1" | awk '{printf "%.1f", $1 / 1048576}'; }
for i in $(seq "$reps"); do
  if [ $((i % 2)) = 1 ]; then
    rec nar.cache "$(mibs "$cache_url/$image_url")"
    rec nar.relay "$(mibs "$relay_url/$image_url")"
  else
    rec nar.relay "$(mibs "$relay_url/$image_url")"
    rec nar.cache "$(mibs "$cache_url/$image_url")"
  fi
done
loads[nar]=$(load)

# The veth has no bandwidth of its own: the rows above measure the CPU a
# copy costs. A LAN has one: the same with the cache's side of the veth at
# 1 Gbit/s (tc tbf), the wired LAN's speed.
log "on the LAN at 1 Gbit/s: the image NAR through the relay vs straight from the cache"
in_lan tc qdisc add dev veth-lan root tbf rate 1gbit burst 256kbit latency 50ms
for i in $(seq "$reps"); do
  if [ $((i % 2)) = 1 ]; then
    rec nargbit.cache "$(mibs "$cache_url/$image_url")"
    rec nargbit.relay "$(mibs "$relay_url/$image_url")"
  else
    rec nargbit.relay "$(mibs "$relay_url/$image_url")"
    rec nargbit.cache "$(mibs "$cache_url/$image_url")"
  fi
done
loads[nargbit]=$(load)
log "on the LAN at 1 Gbit/s: the closure through the relay vs straight from the cache"
for i in $(seq "$reps"); do
  if [ $((i % 2)) = 1 ]; then
    rec onlangbit.cache "$(realise "$cache_url")"
    rec onlangbit.relay "$(realise "$relay_url")"
  else
    rec onlangbit.relay "$(realise "$relay_url")"
    rec onlangbit.cache "$(realise "$cache_url")"
  fi
done
loads[onlangbit]=$(load)
in_lan tc qdisc del dev veth-lan root

log "the relay idle on the LAN for 30 s"
ticks() { awk '{print $14 + $15}' "/proc/$relay_pid/stat"; }
c0=$(ticks) t0=$EPOCHREALTIME
sleep 30
cpu_idle=$(awk "BEGIN {printf \"%.3f\", 100 * ($(ticks) - $c0) / $(getconf CLK_TCK) / ($EPOCHREALTIME - $t0)}")
loads[idle]=$(load)

# --- leaving and rejoining -----------------------------------------------------------
drop() { in_lan nft add table inet relaybench && in_lan nft add chain inet relaybench input '{ type filter hook input priority 0; policy accept; }' && in_lan nft add rule inet relaybench input iifname veth-lan drop; }
undrop() { in_lan nft delete table inet relaybench; }

log "rejoining: link down, then up; packets dropped, then let through; $reps runs each"
for _ in $(seq "$reps"); do
  in_lan ip link set veth-lan down
  wait_for "the relay to answer itself (link down)" 30 answering_itself
  sleep 1
  in_lan ip link set veth-lan up
  t0=$EPOCHREALTIME
  wait_for "the relay to forward (link up)" 60 forwarding
  rec rejoin.link "$(awk "BEGIN {printf \"%.3f\", $EPOCHREALTIME - $t0}")"
  drop
  wait_for "the relay to answer itself (dropped)" 30 answering_itself
  sleep 1
  undrop
  t0=$EPOCHREALTIME
  wait_for "the relay to forward (let through)" 60 forwarding
  rec rejoin.drop "$(awk "BEGIN {printf \"%.3f\", $EPOCHREALTIME - $t0}")"
done
loads[rejoin]=$(load)

log "off the LAN (packets dropped): the closure with [relay, upstream] vs [upstream], $reps runs"
# The first run right after the drop pays for the relay's noticing it (a
# forward with no answer, then a probe that cannot connect); the runs
# after it are the laptop away from the LAN.
drop
rec offlan.first "$(realise "$relay_url" "$upstream_url")"
for i in $(seq "$reps"); do
  if [ $((i % 2)) = 1 ]; then
    rec offlan.upstream "$(realise "$upstream_url")"
    rec offlan.relay "$(realise "$relay_url" "$upstream_url")"
  else
    rec offlan.relay "$(realise "$relay_url" "$upstream_url")"
    rec offlan.upstream "$(realise "$upstream_url")"
  fi
done
loads[offlan]=$(load)
log "off the LAN: [cache, upstream] without the relay, connect-timeout = 3, one run"
rec offlan.direct "$(realise "$cache_url" "$upstream_url" -- 'connect-timeout = 3')"
undrop

rss=$(awk '/^VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$relay_pid/status")
hwm=$(awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$relay_pid/status")

# --- the table ------------------------------------------------------------------------
row() { # NAME UNIT KEY REF_KEY LOADKEY
  local m r=""
  m=$(median "${vals[$3]}")
  [ -n "$4" ] && r=$(awk "BEGIN {printf \"%.2f\", $m / $(median "${vals[$4]}")}")
  printf '%-44s %8s %-6s %-16s %-6s %s\n' "$1" "$m" "$2" "$(range "${vals[$3]}")" "$r" "${loads[$5]}"
}
printf '\n%d paths, %d MiB image, %d runs, %s cores; load average (1, 5, 15 min) when taken\n' "$npaths" "$image_mib" "$reps" "$(nproc)"
printf '%-44s %8s %-6s %-16s %-6s %s\n' row median unit min-max ratio load
row "offlan: [upstream] alone" s offlan.upstream "" offlan
row "offlan: [relay, upstream]" s offlan.relay offlan.upstream offlan
row "offlan: [relay, upstream], just dropped" s offlan.first offlan.upstream offlan
row "offlan: [cache, upstream], connect-timeout=3" s offlan.direct offlan.upstream offlan
row "onlan: straight from the cache" s onlan.cache "" onlan
row "onlan: through the relay" s onlan.relay onlan.cache onlan
row "nar: straight from the cache" MiB/s nar.cache "" nar
row "nar: through the relay" MiB/s nar.relay nar.cache nar
row "nar at 1 Gbit/s: straight from the cache" MiB/s nargbit.cache "" nargbit
row "nar at 1 Gbit/s: through the relay" MiB/s nargbit.relay nargbit.cache nargbit
row "onlan at 1 Gbit/s: straight from the cache" s onlangbit.cache "" onlangbit
row "onlan at 1 Gbit/s: through the relay" s onlangbit.relay onlangbit.cache onlangbit
row "rejoin: link up to first forward" s rejoin.link "" rejoin
row "rejoin: drop lifted to first forward" s rejoin.drop "" rejoin
printf '%-44s %8s %-6s %-16s %-6s %s\n' "rss: relay VmRSS at the end" "$rss" MiB "" "" "" "rss: relay VmHWM" "$hwm" MiB "" "" "" "idle: relay CPU, 30 s on the LAN" "$cpu_idle" "%" "" "" "${loads[idle]}"
printf 'relay log lines: %s (forwarded/self counts in its /metrics)\n' "$(wc -l <"$work/logs/relay.err")"
