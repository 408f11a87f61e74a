package admin

import (
	"bytes"
	"io"
	"net/http"
	"time"
)

// maxBody bounds an admin request body; the largest real one is a list of
// store paths.
const maxBody = 1 << 20

// A request body arrives after the headers, which is where http.Server's
// ReadHeaderTimeout stops; its ReadTimeout would also bound the work after
// the body (the server's background read of the connection hits that
// deadline and cancels the request's context). So a write's body gets its
// own deadline: set before anything else runs, kept on every refusal so
// net/http's discarding of an unread body is bounded too, and lifted once
// the body is read whole.

// bodyDeadline gives the body of r timeout to arrive.
func bodyDeadline(timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength != 0 {
				// Not every ResponseWriter can (a test recorder): then there
				// is no deadline, as before.
				http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
			}
			next.ServeHTTP(w, r)
		})
	}
}

// readBody reads the body whole, then lifts the deadline bodyDeadline set.
func readBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		switch {
		case err != nil:
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestTimeout, "admin API: request body: "+err.Error())
			return
		case len(body) > maxBody:
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusRequestEntityTooLarge, "admin API: request body over 1 MiB")
			return
		}
		http.NewResponseController(w).SetReadDeadline(time.Time{})
		r.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(w, r)
	})
}
