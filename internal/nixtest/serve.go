package nixtest

import (
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// ServeDir serves dir as a static binary cache on a loopback port, the way
// nginx in front of a `nix copy --to file://` directory would: files by
// path, 404 for anything missing, and no directory listings. It returns
// the base URL (no trailing slash) and stop, which closes the listener and
// every open connection at once, so after stop the upstream is really gone.
// stop is idempotent and also runs when t ends.
func ServeDir(t testing.TB, dir string) (url string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ServeDirOn(t, ln, dir)
}

// ServeDirOn is ServeDir on a listener of the caller's (one opened in a
// network namespace, say); ln is closed by stop.
func ServeDirOn(t testing.TB, ln net.Listener, dir string) (url string, stop func()) {
	t.Helper()
	files := http.FileServer(http.Dir(dir))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// FileServer would list directories; a binary cache has none to show.
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(filepath.Clean("/"+r.URL.Path))))
		if err != nil || fi.IsDir() {
			http.NotFound(w, r)
			return
		}
		files.ServeHTTP(w, r)
	})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve %s: %v", dir, err)
		}
	}()
	stop = sync.OnceFunc(func() {
		_ = srv.Close()
		<-done
	})
	t.Cleanup(stop)
	return "http://" + ln.Addr().String(), stop
}
