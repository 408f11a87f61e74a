#!/usr/bin/env bash
# Soak: the proxy under a disk bound, at load, with everything a LAN box
# does at once. On 127.0.0.1:
#   - an upstream (nginx, static) holding a cache the real Nix client wrote
#     and signed: SMALL small paths and IMAGES random "images" of IMAGE_MIB
#     each, more than the proxy's --max-size holds;
#   - the proxy with --max-size BOUND_MIB (a few images);
#   - DURATION seconds of wrk at CONNS connections on narinfo and NAR hits
#     of the small paths (a Lua script rotating over them);
#   - meanwhile a loop of cold image downloads (each image's sha256 checked
#     against its FileHash), which makes the proxy evict to stay in bound;
#     `nix-cache-proxy gc` every 10 s and `verify` every 20 s against the
#     running server; the NAR bytes on disk sampled every 0.5 s.
# Then it reports requests served, errors (non-2xx and socket errors), p99,
# peak RSS (VmHWM), the largest NAR total seen against the bound, the
# images' checks, and a final `verify` (exit 0 = clean).
#
#   bench/soak.sh [DURATION=60] [CONNS=256]
#   env: SMALL=40 IMAGES=6 IMAGE_MIB=48 BOUND_MIB=160 PROXY_BIN=...
set -euo pipefail
duration=${1:-60} conns=${2:-256}
small=${SMALL:-40} images=${IMAGES:-6} image_mib=${IMAGE_MIB:-48} bound_mib=${BOUND_MIB:-160}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"
log() { printf '== %s\n' "$*" >&2; }

for tool in nix:nix-bin nginx:nginx-light wrk:wrk curl:curl; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] \
    || { [ "$(id -u)" = 0 ] && apt-get install -y -qq "${tool#*:}" >/dev/null; } \
    || { echo "needs ${tool%%:*} (apt-get install ${tool#*:})" >&2; exit 1; }
done
PATH=$PATH:/usr/sbin
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n'
export XDG_CACHE_HOME=$work/xdg

log "upstream: $small small paths and $images images of $image_mib MiB, written and signed by nix copy"
nix key generate-secret --key-name soak-1 > "$work/sk"
nix key convert-secret-to-public < "$work/sk" > "$work/pk"
paths=() imgs=()
mkdir -p "$work/files"
for i in $(seq "$small"); do
  head -c $((2048 + RANDOM)) /dev/urandom > "$work/files/small$i"
  paths+=("$(nix store add-file --store "$work/store" "$work/files/small$i")")
done
for i in $(seq "$images"); do
  head -c $((image_mib << 20)) /dev/urandom > "$work/files/image$i.img"
  imgs+=("$(nix store add-file --store "$work/store" "$work/files/image$i.img")")
  rm "$work/files/image$i.img"
done
nix copy --store "$work/store" --to "file://$work/up?compression=zstd&secret-key=$work/sk" "${paths[@]}" 2>/dev/null
nix copy --store "$work/store" --to "file://$work/up?compression=none&secret-key=$work/sk" "${imgs[@]}" 2>/dev/null
rm -rf "$work/store"

static_upstream "$work/up"

proxy_binary
px_port=$(free_port)
px=http://127.0.0.1:$px_port
admin=("--server" "$px")
log "proxy: --max-size ${bound_mib}MiB"
"$work/nix-cache-proxy" serve --listen "127.0.0.1:$px_port" --cache-dir "$work/cache" \
  --upstream "http://127.0.0.1:$up_port" --trusted-public-key "$(cat "$work/pk")" \
  --max-size "${bound_mib}MiB" --log-level warn 2>"$work/proxy.log" &
proxy_pid=$!
pids+=($proxy_pid)
wait_http "$px/nix-cache-info"

# The hits wrk asks for: every small path's narinfo and NAR, warmed first.
: > "$work/urls"
for p in "${paths[@]}"; do
  h=$(basename "$p" | cut -c1-32)
  url=$(curl -fs "$px/$h.narinfo" | sed -n 's/^URL: //p')
  curl -fs -o /dev/null "$px/$url"
  printf '/%s.narinfo\n/%s\n' "$h" "$url" >> "$work/urls"
done
cat > "$work/rotate.lua" <<EOF
local paths = {}
for line in io.lines("$work/urls") do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
EOF

bound=$((bound_mib << 20))
nar_bytes() { find "$work/cache/nar" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
end_at=$(( $(date +%s) + duration ))

( # cold image downloads, round after round, each checked
  ok=0 bad=0
  while [ "$(date +%s)" -lt "$end_at" ]; do
    for p in "${imgs[@]}"; do
      h=$(basename "$p" | cut -c1-32)
      ni=$(curl -fs "$px/$h.narinfo") || { bad=$((bad + 1)); continue; }
      url=$(sed -n 's/^URL: //p' <<<"$ni")
      want=$(sed -n 's/^FileHash: sha256://p' <<<"$ni")
      got=$(curl -fs "$px/$url" | sha256sum | cut -d' ' -f1)
      # FileHash is nix32; compare through nix.
      if [ "$(nix hash to-base32 --type sha256 "$got" 2>/dev/null)" = "$want" ]; then ok=$((ok + 1)); else bad=$((bad + 1)); fi
      [ "$(date +%s)" -lt "$end_at" ] || break
    done
  done
  echo "$ok $bad" > "$work/images.result"
) &
img_pid=$!
( # gc and verify against the running server
  gcs=0 verifies=0 verify_bad=0 n=0
  while [ "$(date +%s)" -lt "$end_at" ]; do
    sleep 10
    "$work/nix-cache-proxy" gc "${admin[@]}" >>"$work/gc.log" 2>&1 && gcs=$((gcs + 1))
    n=$((n + 1))
    if [ $((n % 2)) = 0 ]; then
      if "$work/nix-cache-proxy" verify "${admin[@]}" >>"$work/verify.log" 2>&1; then verifies=$((verifies + 1)); else verify_bad=$((verify_bad + 1)); fi
    fi
  done
  echo "$gcs $verifies $verify_bad" > "$work/admin.result"
) &
adm_pid=$!
( # the bound, sampled
  max=0
  while [ "$(date +%s)" -lt "$end_at" ]; do
    b=$(nar_bytes); [ "$b" -gt "$max" ] && max=$b
    sleep 0.5
  done
  echo "$max" > "$work/bound.result"
) &
bnd_pid=$!

log "load: wrk -t2 -c$conns -d${duration}s on $(wc -l < "$work/urls") hit URLs, cold images, gc and verify meanwhile"
wrk -t2 -c"$conns" -d"${duration}s" --latency -s "$work/rotate.lua" "$px" > "$work/wrk.out" 2>&1 || true
wait "$img_pid" "$adm_pid" "$bnd_pid"
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$proxy_pid/status")
read -r img_ok img_bad < "$work/images.result"
read -r gcs verifies verify_bad < "$work/admin.result"
max_bytes=$(cat "$work/bound.result")
final_verify=0
"$work/nix-cache-proxy" verify "${admin[@]}" > "$work/verify.final" 2>&1 || final_verify=$?

requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.out"); non2xx=${non2xx:-0}
sockerr=$(awk -F'[ ,]+' '/Socket errors/ {print $4 + $6 + $8 + $10}' "$work/wrk.out"); sockerr=${sockerr:-0}
p99=$(awk '/ 99%/ {print $2}' "$work/wrk.out")
rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
cat <<EOF
soak: ${duration}s, wrk -c$conns, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)
  hits served        $requests ($rps req/s), p99 $p99
  errors             non-2xx $non2xx, socket errors $sockerr
  cold images        $img_ok complete and matching FileHash, $img_bad failed or wrong
  gc / verify runs   $gcs gc, $verifies verify clean, $verify_bad verify not clean
  NAR bytes on disk  max $((max_bytes >> 20)) MiB seen, bound ${bound_mib} MiB
  proxy peak RSS     $((hwm / 1024)) MiB
  final verify       exit $final_verify
EOF
status=0
[ "$non2xx" = 0 ] && [ "$sockerr" = 0 ] || { echo "FAIL: errors under load" >&2; status=1; }
[ "$img_bad" = 0 ] || { echo "FAIL: a cold image failed or was wrong" >&2; status=1; }
[ "$max_bytes" -le "$bound" ] || { echo "FAIL: NAR files passed the bound" >&2; status=1; }
[ "$final_verify" = 0 ] && [ "$verify_bad" = 0 ] || { echo "FAIL: verify not clean:" >&2; cat "$work/verify.final" >&2; status=1; }
[ "$status" = 0 ] || { echo "--- proxy log (last 30 lines)" >&2; tail -30 "$work/proxy.log" >&2; }
exit "$status"
