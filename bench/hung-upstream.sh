#!/usr/bin/env bash
# A hung first upstream: the proxy's first --upstream accepts TCP
# connections and never answers (a wedged server, a middlebox swallowing
# requests); the second is nginx serving a binary cache the real Nix client
# wrote and signed. Times, with curl, 20 narinfo lookups of absent paths and
# 10 of paths the second upstream has, one after the other, and prints the
# breaker's metrics afterwards. Extra arguments go to `serve`, e.g.
# `--upstream-timeout 2s`. PROXY_BIN names a binary built already;
# PARALLEL=1 sends the 20 absent lookups at once, as Nix does.
#
#   bench/hung-upstream.sh [SERVE_FLAGS...]
set -euo pipefail
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"

for tool in nix:nix-bin nginx:nginx; do
  command -v "${tool%%:*}" >/dev/null || { [ "$(id -u)" = 0 ] && apt-get install -y -qq "${tool#*:}" >/dev/null; } \
    || { echo "needs ${tool%%:*} (apt-get install ${tool#*:})" >&2; exit 1; }
done
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg


echo "== a signed binary cache of 10 paths, written by nix copy"
nix key generate-secret --key-name bench-1 > "$work/sk"
nix key convert-secret-to-public < "$work/sk" > "$work/pk"
paths=()
for i in $(seq 10); do
  head -c 4096 /dev/urandom > "$work/file$i"
  paths+=("$(nix store add-file --store "$work/store" "$work/file$i")")
done
nix copy --store "$work/store" --to "file://$work/up?secret-key=$work/sk" "${paths[@]}" 2>/dev/null
rm -rf "$work/store"

static_upstream "$work/up"

hung_port=$(free_port)
python3 - "$hung_port" <<'PY' &
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(1024)
held = []
while True:
    conn, _ = s.accept()  # and never a byte back
    held.append(conn)
PY
pids+=($!)

echo "== the proxy: --upstream http://127.0.0.1:$hung_port (hung) --upstream http://127.0.0.1:$up_port (nginx) $*"
proxy_binary
px_port=$(free_port)
"$work/nix-cache-proxy" serve --listen "127.0.0.1:$px_port" --cache-dir "$work/cache" \
  --upstream "http://127.0.0.1:$hung_port" --upstream "http://127.0.0.1:$up_port" \
  --trusted-public-key "$(cat "$work/pk")" "$@" 2>"$work/proxy.log" &
pids+=($!)
px=http://127.0.0.1:$px_port
wait_http "$px/nix-cache-info"

# Nix base32, 32 characters: hashes no cache has.
python3 -c '
import random
for _ in range(21):
    print("".join(random.choice("0123456789abcdfghijklmnpqrsvwxyz") for _ in range(32)))' > "$work/hashes"
lookup() { curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$px/$1.narinfo"; }

echo "== 20 lookups of absent paths${PARALLEL:+, at once}"
start=$(date +%s.%N)
if [ -n "${PARALLEL:-}" ]; then  # at once, as Nix queries narinfos
  export px
  head -20 "$work/hashes" | xargs -P 20 -I{} curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$px/{}.narinfo" > "$work/absent"
else
  head -20 "$work/hashes" | while read -r h; do lookup "$h"; done > "$work/absent"
fi
end=$(date +%s.%N)
awk '{printf "%s %.3fs  ", $1, $2} NR % 5 == 0 {print ""}' "$work/absent"
echo "total: $(echo "$end - $start" | bc) s"

echo "== 10 lookups of paths the second upstream has"
for p in "${paths[@]}"; do lookup "$(basename "$p" | cut -c1-32)"; done > "$work/present"
awk '{printf "%s %.3fs  ", $1, $2} NR % 5 == 0 {print ""}' "$work/present"
awk '$2 > max {max = $2} END {printf "slowest: %.3f s\n", max}' "$work/present"

echo "== breaker metrics"
curl -fs "$px/metrics" | grep -E '^nix_cache_proxy_upstream_breaker'
echo "== status page (JSON): each upstream's health and breaker"
curl -fs "$px/?format=json" | python3 -c 'import json, sys
for u in json.load(sys.stdin)["upstreams"]: print(u["name"], u["health"], u["breaker"])'
curl -fs "$px/" | grep -o '<span class="badge [a-z]*"[^>]*>[a-z]*</span>' | sed 's/ title="[^"]*"//' | sort | uniq -c
echo "== the last absent lookup's reason"
curl -s -D - -o /dev/null "$px/$(tail -1 "$work/hashes").narinfo" | grep -i '^x-nix-cache-proxy-error' || true
