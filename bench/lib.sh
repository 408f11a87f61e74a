# Shared by the bench scripts that source it: ports, readiness, a static
# nginx upstream and the proxy binary. Expects $work (a temp dir) and the
# array pids (processes to stop at exit) to exist.

# free_port prints a loopback port nothing listens on right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_http URL waits up to 20 s for URL to answer 2xx.
wait_http() {
  for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "no answer from $1" >&2
  return 1
}

# static_upstream DIR starts nginx serving DIR as static files on a free
# port, waits for DIR/nix-cache-info, and sets up_port.
static_upstream() {
  up_port=$(free_port)
  cat > "$work/nginx.conf" <<EOF
daemon off;
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 1024; }
http { access_log off; server { listen 127.0.0.1:$up_port; root $1; } }
EOF
  nginx -c "$work/nginx.conf" &
  pids+=($!)
  wait_http "http://127.0.0.1:$up_port/nix-cache-info"
}

# proxy_binary copies PROXY_BIN, or builds ./cmd/proxy of this tree, to
# $work/nix-cache-proxy.
proxy_binary() {
  if [ -n "${PROXY_BIN:-}" ]; then cp "$PROXY_BIN" "$work/nix-cache-proxy"
  else (cd "$(dirname "${BASH_SOURCE[0]}")/.." && CGO_ENABLED=0 go build -o "$work/nix-cache-proxy" ./cmd/proxy); fi
}
