#!/usr/bin/env bash
# bench/crash.sh [ROUNDS] [SEED]: the kill -9 test (TestCrashSafety in
# cmd/proxy) for ROUNDS rounds (default 200): the proxy binary is killed at
# seeded random moments during cold downloads, prefetch jobs, eviction and
# gc passes, pins and miss-log flushes, restarted on the same cache dir,
# and checked (verify --deep clean, no complete body with wrong bytes, pins
# and misses older than 2 s kept). SEED replays a run's choices (the test
# logs the seed it used). About 3 s a round.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-200}
export NIX_CACHE_PROXY_CRASH_ROUNDS=$rounds
if [ -n "${2:-}" ]; then
	export NIX_CACHE_PROXY_CRASH_SEED=$2
fi
# Without -race: rounds run at the binary's real speed, as deployed.
go test -count=1 -timeout 0 -run '^TestCrashSafety$' -v ./cmd/proxy 2>&1 | grep -v 'level=' | grep -v 'exit 0 in'
