#!/usr/bin/env bash
# bench/powercut.sh [CUTS] [SEED]: the power-cut test (TestPowerCut in
# cmd/proxy) for CUTS cuts (default 100): the proxy binary runs on a FUSE
# file system that drops, at each cut, every write, create, rename and
# unlink no fsync made durable (internal/powercuttest), during a cold
# closure, uploads, eviction, gc and recompression; it restarts on what
# survived and is checked (verify --deep clean, every narinfo served names
# a NAR that matches its FileHash and whose references are served, every
# acknowledged upload kept). SEED replays a run's choices (the test logs
# the seed it used). Needs root and /dev/fuse. About 2 s a cut.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIX_CACHE_PROXY_POWERCUT_ROUNDS=${1:-100}
if [ -n "${2:-}" ]; then
	export NIX_CACHE_PROXY_CRASH_SEED=$2
fi
# Without -race: cuts land at the binary's real speed, as deployed.
go test -count=1 -timeout 0 -run '^TestPowerCut$' -v ./cmd/proxy 2>&1 | grep -v 'level=' | grep -v 'exit 0 in'
