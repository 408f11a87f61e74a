// A module of its own: the trace parser (golang.org/x/exp/trace) is a
// benchmark tool's dependency, not the proxy's.
module github.com/nix-cache-proxy/nix-cache-proxy/bench/tracetail

go 1.26.0

require golang.org/x/exp v0.0.0-20261113113407-e3970619a1a4
