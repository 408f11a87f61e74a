package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// logLines is a slog JSON sink the test can read back.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// find returns the lines whose msg is msg and whose attributes include
// every key/value in match (compared as JSON renders them).
func (l *logLines) find(t *testing.T, msg string, match map[string]any) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range bytes.Split(l.buf.Bytes(), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, line)
		}
		if m["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range match {
			ok = ok && m[k] == v
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// requestID returns the id of the one access-log line for path.
func (l *logLines) requestID(t *testing.T, path string) float64 {
	t.Helper()
	lines := l.find(t, "request", map[string]any{"path": path})
	if len(lines) != 1 {
		t.Fatalf("%d access log lines for %s, want 1", len(lines), path)
	}
	id, _ := lines[0]["request_id"].(float64)
	if id == 0 {
		t.Fatalf("access log line without request_id: %v", lines[0])
	}
	return id
}

// TestLogUpstreamFetches: each upstream fetch is logged at info with path,
// upstream, bytes, duration and outcome, and every warning the cache logs
// for a request carries that request's id, as the access line does.
func TestLogUpstreamFetches(t *testing.T) {
	var logs logLines
	log := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p, fu, _ := metricsProxy(t, config{log: log})
	file := fakeupstream.RandomBytes(10 << 10)
	it := fu.Add(fakeupstream.Path{File: file, Compression: "xz"})
	nar := p.narURL(it.Hash)
	if r := p.get(nar); r.status != http.StatusOK {
		t.Fatalf("NAR: %d", r.status)
	}
	other, _ := fakeupstream.NewKey(t, "someone-else-1")
	bad := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100), SignWith: &other})
	p.get("/" + bad.Hash + ".narinfo")
	corrupt := fu.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(10 << 10), Compression: "xz"})
	// Frozen until the client has its 200, so the failure is mid-body.
	g := newGate()
	defer g.open()
	fu.SetFault(corrupt.NARPath, fakeupstream.Fault{Corrupt: true, HoldAt: 1 << 10, Hold: g.hold})
	corruptNAR := p.narURL(corrupt.Hash)
	resp, err := p.client.Get(p.srv.URL + corruptNAR)
	g.open()
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	eventually(t, "the corrupt NAR's request is logged", func() bool {
		return len(logs.find(t, "request", map[string]any{"path": corruptNAR})) == 1
	})
	// A fill logs its "upstream NAR" line once the NAR is committed,
	// after its client had the last byte.
	p.settle()

	id := logs.requestID(t, "/"+it.Hash+".narinfo")
	if n := len(logs.find(t, "upstream narinfo", map[string]any{
		"level": "INFO", "request_id": id, "path": it.Hash + ".narinfo", "upstream": fu.URL(),
		"bytes": float64(len(it.NarInfo)), "outcome": "found",
	})); n != 1 {
		t.Errorf("%d info lines for the narinfo fetch of request %v, want 1:\n%s", n, id, logs.buf.String())
	}
	id = logs.requestID(t, nar)
	lines := logs.find(t, "upstream NAR", map[string]any{
		"level": "INFO", "request_id": id, "path": it.NARPath, "store_path": it.StorePath,
		"upstream": fu.URL(), "bytes": float64(len(file)), "outcome": "fetched",
	})
	if len(lines) != 1 || lines[0]["duration"] == nil {
		t.Errorf("info lines for the NAR fetch of request %v: %v, want 1 with a duration:\n%s", id, lines, logs.buf.String())
	}
	id = logs.requestID(t, "/"+bad.Hash+".narinfo")
	if n := len(logs.find(t, "narinfo refused: no trusted signature", map[string]any{
		"level": "WARN", "request_id": id, "hash": bad.Hash, "upstream": fu.URL(),
	})); n != 1 {
		t.Errorf("%d warnings for the bad signature of request %v, want 1:\n%s", n, id, logs.buf.String())
	}
	id = logs.requestID(t, corruptNAR)
	if n := len(logs.find(t, "upstream NAR", map[string]any{
		"level": "WARN", "request_id": id, "outcome": "verify-failed",
	})); n != 1 {
		t.Errorf("%d warnings for the hash mismatch of request %v, want 1:\n%s", n, id, logs.buf.String())
	}
	if n := len(logs.find(t, "response aborted", map[string]any{"level": "WARN", "request_id": id})); n != 1 {
		t.Errorf("%d 'response aborted' warnings for request %v, want 1:\n%s", n, id, logs.buf.String())
	}
}
