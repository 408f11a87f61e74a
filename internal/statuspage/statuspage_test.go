package statuspage

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/evict"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fleet"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/prefetch"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/s3store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upload"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/upstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/warm"
)

const (
	upA = "https://mycache.cachix.org"
	upB = "https://cache.nixos.org"
	// evilPath is a store path as a hostile upstream might name it.
	evilPath = "/nix/store/0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c-<script>alert(1)</script>"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeIndex is an Index with fixed answers.
type fakeIndex struct {
	stats       store.Stats
	free, total uint64
	pins        []store.Pin
	misses      []store.Miss
	missErr     error
}

func (f *fakeIndex) Stats(context.Context) (store.Stats, error) { return f.stats, nil }
func (f *fakeIndex) Disk() (uint64, uint64, error)              { return f.free, f.total, nil }
func (f *fakeIndex) Pins(context.Context) ([]store.Pin, error)  { return f.pins, nil }
func (f *fakeIndex) Misses(context.Context) ([]store.Miss, error) {
	return append([]store.Miss(nil), f.misses...), f.missErr
}

type fakeDownloads []cache.Download

func (f fakeDownloads) Downloads() []cache.Download { return f }

type fakeJobs []prefetch.Status

func (f fakeJobs) List() []prefetch.Status { return f }

// fakeBound is a Bound with fixed answers.
type fakeBound struct {
	max  int64
	kept []evict.Variant
}

func (f fakeBound) MaxSize() int64                                { return f.max }
func (f fakeBound) Kept(context.Context) ([]evict.Variant, error) { return f.kept, nil }

// traffic is cfg's upstream tally, for a test to count requests in.
func traffic(cfg Config) *upstream.Tally { return cfg.Traffic.(*upstream.Tally) }

// emptyConfig is a fresh cache that has served nothing.
func emptyConfig() Config {
	return Config{
		Index:     &fakeIndex{free: 400 << 30, total: 500 << 30},
		Downloads: fakeDownloads(nil),
		Jobs:      fakeJobs(nil),
		Counters:  &fakeCounters{VerifyFailures: map[string]int64{"signature": 0, "narinfo": 0, "size": 0, "hash": 0}},
		Traffic:   new(upstream.Tally),
		Upstreams: []string{upA, upB},
		Started:   t0.Add(-time.Minute),
		Version:   &Version{Module: "github.com/nix-cache-proxy/nix-cache-proxy", Version: "v1.2.3"},
		Now:       func() time.Time { return t0 },
	}
}

type fakeWarms []warm.Status

func (f fakeWarms) List() []warm.Status { return f }

// busyConfig has traffic, downloads, pins, misses and jobs.
func busyConfig() Config {
	cfg := emptyConfig()
	cfg.Started = t0.Add(-3*time.Hour - 12*time.Minute)
	m := cfg.Counters.(*fakeCounters)
	m.NARHits, m.NARMisses, m.NarInfoHits, m.NarInfoMisses = 140, 20, 1200, 34
	m.ServedCacheBytes, m.ServedUpstreamBytes = 7<<30, 1<<30
	m.SavedBytes = 5 << 30 // recompressed hits: less than the 7 GiB sent
	for range 30 {
		traffic(cfg).UpstreamRequest(upA, "narinfo", "ok", 40*time.Millisecond)
	}
	for range 4 {
		traffic(cfg).UpstreamRequest(upA, "narinfo", "not_found", 20*time.Millisecond)
	}
	traffic(cfg).UpstreamRequest(upB, "narinfo", "ok", 120*time.Millisecond)
	traffic(cfg).UpstreamFetched(upA, 1<<30)
	m.VerifyFailures["signature"]++
	cfg.Uploads = fakeUploads{Outcomes: map[string]int64{"ok": 3 + 3, "rejected": 1}, Bytes: 2 << 30} // NARs and narinfos
	m.Recompressed, m.RecompressInBytes, m.RecompressOutBytes, m.RecompressCPU = 12, 1<<30, 2<<30, 30*time.Second
	cfg.Index = &fakeIndex{
		stats: store.Stats{NarInfos: 1234, NARs: 456, NARBytes: 42 << 30},
		free:  120 << 30, total: 500 << 30,
		pins: []store.Pin{
			{Hash: "0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", StorePath: "/nix/store/0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c-nixos-rosetta-builder.img", Since: t0.Add(-48 * time.Hour)},
		},
		misses: []store.Miss{
			{Hash: "1c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", Count: 3, Outcome: store.OutcomeNotFound, LastSeen: t0.Add(-time.Minute)},
			{Hash: "0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", StorePath: evilPath, Count: 17, Outcome: store.OutcomeFetched, Upstream: upA, LastSeen: t0.Add(-3 * time.Minute)},
			{Hash: "2c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", StorePath: "/nix/store/2c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c-hello-2.12", Count: 5, Outcome: store.OutcomeUpstreamError, LastSeen: t0.Add(-time.Hour)},
			{Hash: "3c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", Count: 2, Outcome: store.OutcomeRefusedSignature, LastSeen: t0.Add(-2 * time.Hour),
				Reason: `cache: not found: http://up-a: narinfo: no valid signature by a trusted key (signed by ["up-1"])`},
		},
	}
	cfg.Downloads = fakeDownloads{
		{NAR: "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.xz", Upstream: upA, Bytes: 600 << 20, Size: 2 << 30, Clients: 3},
		{NAR: "0w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3.nar.zst", Upstream: upB, Bytes: 5 << 20, Size: -1, Clients: 1},
	}
	cfg.Jobs = fakeJobs{
		{ID: "j1", State: prefetch.StateDone, Started: t0.Add(-time.Hour), Paths: 10, Cached: 10},
		{ID: "j2", State: prefetch.StateRunning, Started: t0.Add(-time.Minute), Paths: 40, Cached: 12, Fetching: 4,
			BytesTotal: 3 << 30, BytesDone: 1 << 30, Request: prefetch.Request{Paths: []string{evilPath}, Closure: true}},
	}
	return cfg
}

// downConfig has its first upstream failing every request.
func downConfig() Config {
	cfg := emptyConfig()
	for range 12 {
		traffic(cfg).UpstreamRequest(upA, "narinfo", "error", 2*time.Second)
	}
	traffic(cfg).UpstreamRequest(upB, "narinfo", "ok", 50*time.Millisecond)
	traffic(cfg).UpstreamBreaker(upA, 1, true) // upstream.BreakerOpen
	cfg.Index.(*fakeIndex).missErr = errors.New("index <closed>")
	return cfg
}

func get(t *testing.T, h http.Handler, method, target string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return rec.Result()
}

func TestPage(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		want   []string
		absent []string
	}{{
		name: "empty cache",
		cfg:  emptyConfig(),
		want: []string{
			"<title>nix-cache-proxy · – hits</title>",
			`<meta http-equiv="refresh" content="10">`,
			"Nothing is being downloaded right now.", "Nothing pinned.", "No misses recorded",
			"No prefetch jobs since start.", upA, upB, "idle", "400 GiB</b> free of 500 GiB", "v1.2.3",
			"up 1 min",
		},
		absent: []string{"healthy", `role="alert"`, "Uploads", "Recompressed", "Kept variants", "bound <b>", "skipped", "retrying", "Warmed flake attributes"},
	}, {
		name: "busy cache",
		cfg:  busyConfig(),
		want: []string{
			"<title>nix-cache-proxy · 87.5 % hits</title>",
			"<b>140</b> of 160 NAR requests from disk", "narinfo: <b>97.2 %</b> of 1,234",
			"5.0 GiB<small>not fetched upstream</small>", "disk 7.0 GiB", "<b>87.5 %</b> of 8.0 GiB served came from disk", "upstream 1.0 GiB",
			"42.0 GiB<small>cached</small>", "1,234<small>narinfos</small>",
			"healthy", "38 ms", "120 ms", "bad signature: 1 · unusable narinfo: 0",
			"600 MiB of 2.0 GiB · 29.2 %", "size not known yet",
			"-nixos-rosetta-builder.img", "2 d ago",
			"&lt;script&gt;alert(1)&lt;/script&gt;", "top 4 of 4", "upstream error",
			"refused: signature", "no valid signature by a trusted key (signed by [&#34;up-1&#34;])",
			"running", "12 / 40", "1.0 GiB of 3.0 GiB", "up 3 h 12 min",
			"6 stored (2.0 GiB)", "1 refused",
			"Recompressed to zstd: 12 NARs, 1.0 GiB read → 2.0 GiB kept, 30.0 CPU s (15.0 s per GiB)",
		},
		absent: []string{"<script>", "alert(1)</script>", "Kept variants"},
	}, {
		name: "bound and kept variants",
		cfg: func() Config {
			cfg := busyConfig()
			cfg.Bound = fakeBound{max: 84 << 30, kept: []evict.Variant{{
				Rule: "nixos*.qcow2=3", Hash: "0123456789abcdfghijklmnpqrsvwxyz",
				StorePath: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-builder.qcow2", Seen: cfg.Now().Add(-49 * time.Hour), Kept: true,
			}}}
			return cfg
		}(),
		want: []string{"bound <b>84.0 GiB</b> (--max-size): 50.0 % used", "Kept variants", "nixos*.qcow2=3", "-nixos-builder.qcow2", "2 d ago"},
	}, {
		name: "no upstream answers",
		cfg: func() Config {
			cfg := downConfig()
			cfg.Degraded = func() error {
				return errors.New("no upstream answers: http://a.example open (last: connection refused)")
			}
			return cfg
		}(),
		want: []string{`role="alert"><b>Degraded: only what is cached is served.</b> no upstream answers: http://a.example open (last: connection refused)`},
	}, {
		name: "warmed attributes",
		cfg: func() Config {
			cfg := emptyConfig()
			cfg.Warms = fakeWarms{
				{Target: "github:me/macs#darwinConfigurations.studio.system", Rev: "5d2f0c4a9e1b77", Short: "5d2f0c4a9e1b",
					Paths: 912, Cached: 880, Upstream: 31, Missing: 1, Builds: 1, Warmed: cfg.Now().Add(-3 * time.Minute)},
				{Target: "github:me/macs#packages.aarch64-linux.<img>", Error: "nix flake metadata: exit status 1: error: HTTP error 503", Failures: 4},
			}
			return cfg
		}(),
		want: []string{"Warmed flake attributes", "github:me/macs#darwinConfigurations.studio.system", "5d2f0c4a9e1b", "912", "880",
			`<span class="badge bad">1</span>`, "3 min ago", "failing ×4", "HTTP error 503", "never", "&lt;img&gt;"},
		absent: []string{"<img>"},
	}, {
		name:   "upstream down",
		cfg:    downConfig(),
		want:   []string{`<span class="badge bad">down</span>`, `breaker open`, ">skipped</span>", "100 %", "2.00 s", "miss log: index &lt;closed&gt;", "healthy"},
		absent: []string{"index <closed>"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, Handler(NewCollector(tt.cfg), Options{}), http.MethodGet, "/")
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			page := string(body)
			for _, w := range tt.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(page, a) {
					t.Errorf("page has %q", a)
				}
			}
		})
	}
}

func TestTopMissesOrder(t *testing.T) {
	s, err := NewCollector(busyConfig()).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, m := range s.TopMisses {
		got = append(got, m.Count)
	}
	if diff := cmp.Diff([]int64{17, 5, 3, 2}, got); diff != "" {
		t.Errorf("top miss counts (-want +got):\n%s", diff)
	}
	cfg := busyConfig()
	cfg.TopMisses = 1
	s, _ = NewCollector(cfg).Snapshot(context.Background())
	if len(s.TopMisses) != 1 || s.MissRows != 4 {
		t.Errorf("TopMisses 1: got %d rows of %d", len(s.TopMisses), s.MissRows)
	}
	// A row no client asked for (a prefetched path, in a miss log written
	// before such rows stopped being made) is not among the misses.
	cfg = busyConfig()
	ix := cfg.Index.(*fakeIndex)
	ix.misses = append(ix.misses, store.Miss{Hash: "4c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", Outcome: store.OutcomeFetched, LastSeen: t0})
	s, _ = NewCollector(cfg).Snapshot(context.Background())
	for _, m := range s.TopMisses {
		if m.Count == 0 {
			t.Errorf("top misses list %s with count 0", m.Hash)
		}
	}
}

func TestJSON(t *testing.T) {
	resp := get(t, Handler(NewCollector(busyConfig()), Options{}), http.MethodGet, "/?format=json")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var s Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	want := Lookups{NarInfoHits: 1200, NarInfoMisses: 34, NARHits: 140, NARMisses: 20}
	if diff := cmp.Diff(want, s.Lookups); diff != "" {
		t.Errorf("lookups (-want +got):\n%s", diff)
	}
	if len(s.Upstreams) != 2 || s.Upstreams[0].Name != upA || s.Upstreams[0].OK != 30 || s.Upstreams[0].NotFound != 4 ||
		s.Upstreams[0].Breaker != BreakerClosed {
		t.Errorf("upstreams: %+v", s.Upstreams)
	}
	if s.Served.CacheBytes != 7<<30 || len(s.Downloads) != 2 || len(s.Pins) != 1 || s.VerifyFailures["signature"] != 1 {
		t.Errorf("snapshot: %+v", s)
	}
	if s.Jobs[0].ID != "j2" {
		t.Errorf("running job not first: %+v", s.Jobs)
	}
}

func TestHandlerRequests(t *testing.T) {
	h := Handler(NewCollector(emptyConfig()), Options{})
	tests := []struct {
		method, target string
		status         int
		bodyHas        string
	}{
		{http.MethodHead, "/", http.StatusOK, ""},
		{http.MethodGet, "/?refresh=0", http.StatusOK, `href="?refresh=10">auto-refresh`},
		{http.MethodGet, "/?refresh=30", http.StatusOK, `content="30"`},
		{http.MethodGet, "/?refresh=-1", http.StatusBadRequest, ""},
		{http.MethodGet, "/?refresh=soon", http.StatusBadRequest, ""},
		{http.MethodGet, "/?format=xml", http.StatusBadRequest, ""},
		{http.MethodPost, "/", http.StatusMethodNotAllowed, ""},
	}
	for _, tt := range tests {
		resp := get(t, h, tt.method, tt.target)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tt.status {
			t.Errorf("%s %s: status %d, want %d", tt.method, tt.target, resp.StatusCode, tt.status)
		}
		if !strings.Contains(string(body), tt.bodyHas) {
			t.Errorf("%s %s: body lacks %q", tt.method, tt.target, tt.bodyHas)
		}
		if tt.method == http.MethodHead && (len(body) != 0 || resp.Header.Get("Content-Length") == "" || resp.Header.Get("Content-Type") != "text/html; charset=utf-8") {
			t.Errorf("HEAD: body %d bytes, headers %v", len(body), resp.Header)
		}
	}
	if resp := get(t, h, http.MethodGet, "/?refresh=0"); strings.Contains(readAll(resp), "http-equiv") {
		t.Error("refresh=0 still refreshes")
	}
}

func readAll(resp *http.Response) string {
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestHealthWindow checks that health follows recent answers: errors
// before the window are forgotten once the upstream answers well again.
func TestHealthWindow(t *testing.T) {
	now := t0
	cfg := emptyConfig()
	cfg.Started = t0.Add(-time.Hour)
	cfg.Now = func() time.Time { return now }
	c := NewCollector(cfg)
	healthOf := func() string {
		s, _ := c.Snapshot(context.Background())
		return s.Upstreams[0].Health
	}
	for range 5 {
		traffic(cfg).UpstreamRequest(upA, "narinfo", "error", time.Second)
	}
	// First view, no history: judged since start.
	if h := healthOf(); h != HealthDown {
		t.Errorf("after errors: %s, want down", h)
	}
	now = now.Add(time.Minute)
	traffic(cfg).UpstreamRequest(upA, "narinfo", "ok", time.Millisecond)
	if h := healthOf(); h != HealthOK {
		t.Errorf("after recovery: %s, want ok", h)
	}
	now = now.Add(time.Minute)
	if h := healthOf(); h != HealthOK {
		t.Errorf("quiet after recovery, within window: %s, want ok", h)
	}
	now = now.Add(10 * time.Minute)
	healthOf()
	now = now.Add(time.Minute)
	if h := healthOf(); h != HealthIdle {
		t.Errorf("no requests in window: %s, want idle", h)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct{ got, want string }{
		{formatBytes(int64(0)), "0 B"},
		{formatBytes(int64(1023)), "1023 B"},
		{formatBytes(int64(1536)), "1.5 KiB"},
		{formatBytes(int64(1288490188)), "1.2 GiB"},
		{formatBytes(int64(500 << 30)), "500 GiB"},
		{formatNum(int64(1234567)), "1,234,567"},
		{formatNum(12), "12"},
		{formatPct(0.875), "87.5 %"},
		{formatPct(0.99999), "99.9 %"},
		{formatPct(1), "100 %"},
		{formatPct(0), "0.0 %"},
		{formatPct(-1), "–"},
		{latency(0.0364), "36 ms"},
		{uptime(90), "1 min"},
		{uptime(3*3600 + 12*60), "3 h 12 min"},
		{uptime(72 * 3600), "3 d"},
		{ago(t0, t0.Add(-2*time.Second)), "just now"},
		{ago(t0, time.Time{}), "–"},
		{string(width(1.5)), "width:100.00%"},
		{string(width(-1)), "width:0.00%"},
	}
	for i, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%d: got %q, want %q", i, tt.got, tt.want)
		}
	}
	if diff := cmp.Diff(pathParts{Dir: "/nix/store/", Hash: "0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c", Name: "-hello"}, splitPath("/nix/store/0c9m0k6d5bs8qvkkjcqj6yf4h8fvhq7c-hello")); diff != "" {
		t.Error(diff)
	}
}

type fakeCounters cache.Stats

func (f *fakeCounters) Stats() cache.Stats { return cache.Stats(*f) }

type fakeUploads upload.Stats

func (f fakeUploads) Stats() upload.Stats { return upload.Stats(f) }

type fakeFills fleet.Stats

func (f fakeFills) Stats() fleet.Stats { return fleet.Stats(f) }

type fakeBucket s3store.Stats

func (f fakeBucket) Stats() s3store.Stats { return s3store.Stats(f) }

// TestSharedStorage: with an s3:// bucket the page shows this proxy's part
// in the fleet, from its fills and bucket; with the cache dir it shows no
// section.
func TestSharedStorage(t *testing.T) {
	fills := fakeFills{LeasesTaken: 3, LeasesTakenOver: 1, Joins: 5, JoinErrors: 1}
	bucket := fakeBucket{Requests: 3, Errors: 1, Latency: 60 * time.Millisecond} // 20, 10 and 30 ms
	cfg := Config{Fills: fills, Bucket: bucket, Storage: "s3://cache/fleet?endpoint=s3.lan:7070&scheme=http", CacheDir: "/var/cache/x"}
	s, err := NewCollector(cfg).Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := Storage{Backend: "s3", Location: cfg.Storage, LeasesTaken: 3, LeasesTakenOver: 1, Joins: 5, JoinErrors: 1,
		BucketRequests: 3, BucketErrors: 1, BucketLatencySec: 0.02}
	if diff := cmp.Diff(want, s.Storage, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("storage (-want +got):\n%s", diff)
	}
	page, _ := io.ReadAll(get(t, Handler(NewCollector(cfg), Options{}), http.MethodGet, "/").Body)
	for _, want := range []string{"Shared storage", "1 taken over from a dead proxy", "Fills joined from another proxy: 5", "1 errors", "mean 20 ms"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	cfg.Storage = ""
	page, _ = io.ReadAll(get(t, Handler(NewCollector(cfg), Options{}), http.MethodGet, "/").Body)
	if strings.Contains(string(page), "Shared storage") {
		t.Error("a proxy on its cache dir shows a shared storage section")
	}
}
