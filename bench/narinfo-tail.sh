#!/usr/bin/env bash
# What the narinfo-hit tail is made of (issue #12): wrk -t1 -c32 and
# -t2 -c32 on one narinfo of the proxy, as in bench/run.sh's rounds, with a
# 2 s Go execution trace taken in the middle of each run and read by
# bench/tracetail (waits of goroutines the network poller woke, how much of
# the longest ones their processor's thread was off the CPU, and streaks of
# one connection's requests served back to back). Prints wrk's requests/s
# and p99 beside them. PROXY_BIN names a binary built already; SECS the
# length of each wrk run (default 6, at least 4).
#
#   bench/narinfo-tail.sh [SERVE_FLAGS...]
set -euo pipefail
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${SECS:-6}
[ "$secs" -ge 4 ] || { echo "SECS must be at least 4" >&2; exit 2; }

for tool in nix:nix-bin nginx:nginx wrk:wrk; do
  command -v "${tool%%:*}" >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq "${tool#*:}" >/dev/null; } \
    || { echo "needs ${tool%%:*} (apt-get install ${tool#*:})" >&2; exit 1; }
done
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg

# One signed narinfo, written by the real Nix client.
nix key generate-secret --key-name bench-1 >"$work/sk"
nix key convert-secret-to-public <"$work/sk" >"$work/pk"
echo hello >"$work/file"
path=$(nix store add-file --store "$work/store" "$work/file")
nix copy --store "$work/store" --to "file://$work/up?secret-key=$work/sk" "$path" 2>/dev/null
hash=$(basename "$path" | cut -c1-32)
static_upstream "$work/up"

(cd "$root/bench/tracetail" && go build -o "$work/tracetail" .)
proxy_binary
port=$(free_port) pprof=$(free_port)
"$work/nix-cache-proxy" serve --listen "127.0.0.1:$port" --cache-dir "$work/cache" \
  --upstream "http://127.0.0.1:$up_port" --trusted-public-key "$(cat "$work/pk")" \
  --pprof-listen "127.0.0.1:$pprof" --log-level warn "$@" 2>"$work/proxy.log" &
pids+=($!)
wait_http "http://127.0.0.1:$port/$hash.narinfo"

for t in 1 2; do
  wrk -t"$t" -c32 -d"${secs}s" --latency "http://127.0.0.1:$port/$hash.narinfo" >"$work/wrk" &
  w=$!
  sleep $(((secs - 2) / 2))
  curl -fsS -o "$work/trace.t$t" "http://127.0.0.1:$pprof/debug/pprof/trace?seconds=2"
  wait "$w"
  echo "== wrk -t$t -c32 -d${secs}s: $(awk '/^Requests\/sec:/ {print $2}' "$work/wrk") req/s, p99 $(awk '$1 == "99%" {print $2}' "$work/wrk") (trace taken in the middle)"
  "$work/tracetail" "$work/trace.t$t"
done
