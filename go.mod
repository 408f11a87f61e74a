module github.com/nix-cache-proxy/nix-cache-proxy

go 1.26.0

require (
	github.com/BurntSushi/toml v1.6.0
	github.com/go-chi/chi/v5 v5.5.0
	github.com/google/go-cmp v0.7.0
	github.com/nix-community/go-nix v0.0.0-20250101154619-4bdde671e0a1
	go.etcd.io/bbolt v1.5.0
	golang.org/x/sync v0.25.0
)

require golang.org/x/sys v0.45.0 // indirect
