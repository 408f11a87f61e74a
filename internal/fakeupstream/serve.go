package fakeupstream

import (
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Fault is how the upstream misbehaves for one URL path. Body faults apply
// to whatever is served there, narinfo or NAR.
type Fault struct {
	// Status answers with this status and a short text body.
	Status int
	// Hang sends nothing until the client gives up or the server stops.
	Hang bool
	// Body replaces what is served (with status 200), so a path can
	// answer with another path's narinfo, say.
	Body []byte

	// CutAt > 0 announces the full Content-Length, sends CutAt bytes and
	// closes the connection.
	CutAt int
	// StallAt > 0 sends StallAt bytes, then hangs like Hang.
	StallAt int
	// Corrupt flips one byte in the middle: same length, wrong hash.
	Corrupt bool
	// Extra bytes are appended to the body (and to Content-Length).
	Extra int
	// Chunked omits Content-Length.
	Chunked bool

	// Chunk > 0 sends the body Chunk bytes at a time, flushing and
	// sleeping Delay after each.
	Chunk int
	Delay time.Duration
	// HoldAt > 0 calls Hold (on the handler's goroutine) once HoldAt bytes
	// are sent and flushed; the body resumes when Hold returns. A test
	// blocks in Hold to freeze a download mid-way.
	HoldAt int
	Hold   func()

	// Ranges says Accept-Ranges: bytes and answers a Range header
	// ("bytes=a-b" or "bytes=a-") with a 206 of those bytes. CutAt,
	// StallAt and HoldAt count from the file's start, so they hit only the
	// connection carrying that offset.
	Ranges bool
	// IgnoreRange says Accept-Ranges: bytes but answers any Range with a
	// 200 of the whole body.
	IgnoreRange bool
	// WrongRange answers a Range with a 206 whose Content-Range and bytes
	// start one byte later than asked.
	WrongRange bool
	// Redirect answers every request with a 302 to RedirectPrefix+path,
	// which serves the path as it is (its requests counted under it).
	Redirect bool
}

// RedirectPrefix is where Fault.Redirect sends a client.
const RedirectPrefix = "/_redirected"

func (f Fault) isZero() bool { return reflect.ValueOf(f).IsZero() }

func (u *Upstream) serve(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.counts[r.URL.Path]++
	path, redirected := strings.CutPrefix(r.URL.Path, RedirectPrefix)
	f := u.faults[path]
	body, ok := u.files[path]
	done := u.done
	u.mu.Unlock()
	if f.Redirect && !redirected {
		http.Redirect(w, r, RedirectPrefix+r.URL.Path, http.StatusFound)
		return
	}

	if r.URL.Path == "/nix-cache-info" {
		body, ok = u.info, true
	}

	hang := func() {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}
	switch {
	case f.Status != 0:
		http.Error(w, http.StatusText(f.Status), f.Status)
		return
	case f.Hang:
		hang()
		return
	case f.Body != nil:
		body, ok = f.Body, true
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	if f.Corrupt && len(body) > 0 {
		body = append([]byte(nil), body...)
		body[len(body)/2] ^= 0xff
	}
	if f.Extra > 0 {
		body = append(append([]byte(nil), body...), make([]byte, f.Extra)...)
	}
	if f.Ranges || f.IgnoreRange || f.WrongRange {
		w.Header().Set("Accept-Ranges", "bytes")
	}
	status, off := http.StatusOK, 0
	if first, last, ok := parseRange(r.Header.Get("Range"), len(body)); ok && !f.IgnoreRange && (f.Ranges || f.WrongRange) {
		if f.WrongRange {
			first++
		}
		w.Header().Set("Content-Range", "bytes "+strconv.Itoa(first)+"-"+strconv.Itoa(last)+"/"+strconv.Itoa(len(body)))
		status, off = http.StatusPartialContent, first
		body = body[:last+1]
		// A fault at or before the range's start is not on this
		// connection: a resume from where one broke goes through.
		f.CutAt, f.StallAt, f.HoldAt = shift(f.CutAt, first), shift(f.StallAt, first), shift(f.HoldAt, first)
	}
	if !f.Chunked {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)-off))
	}
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	u.writeBody(w, body[off:], f, hang, r.URL.Path)
}

func shift(at, first int) int {
	if at > first {
		return at - first
	}
	return 0
}

// parseRange reads "bytes=a-b" or "bytes=a-" for a body of size bytes.
func parseRange(h string, size int) (first, last int, ok bool) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	if !ok || !ok2 {
		return 0, 0, false
	}
	first, err := strconv.Atoi(a)
	if err != nil || first >= size {
		return 0, 0, false
	}
	last = size - 1
	if b != "" {
		if last, err = strconv.Atoi(b); err != nil || last < first {
			return 0, 0, false
		}
		last = min(last, size-1)
	}
	return first, last, true
}

// writeBody sends body as f says, stopping early at CutAt or StallAt.
func (u *Upstream) writeBody(w http.ResponseWriter, body []byte, f Fault, hang func(), path string) {
	end := len(body)
	if f.CutAt > 0 && f.CutAt < end {
		end = f.CutAt
	}
	if f.StallAt > 0 && f.StallAt < end {
		end = f.StallAt
	}
	chunk := f.Chunk
	if chunk <= 0 {
		chunk = end
	}
	flush := func() {
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
	}
	held := false
	for sent := 0; sent < end; {
		n := min(chunk, end-sent)
		if f.HoldAt > 0 && !held && sent < f.HoldAt {
			n = min(n, f.HoldAt-sent)
		}
		k, err := w.Write(body[sent : sent+n])
		u.mu.Lock()
		u.sent[path] += int64(k)
		u.mu.Unlock()
		if err != nil {
			return
		}
		sent += n
		flush()
		if f.HoldAt > 0 && !held && sent >= f.HoldAt {
			held = true
			if f.Hold != nil {
				f.Hold()
			}
		}
		if f.Delay > 0 && sent < end {
			time.Sleep(f.Delay)
		}
	}
	switch {
	case f.CutAt > 0 && f.CutAt < len(body):
		flush()
		// Close the connection under net/http's feet: the client sees a
		// body shorter than its Content-Length.
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case f.StallAt > 0 && f.StallAt < len(body):
		flush()
		hang()
	}
}
