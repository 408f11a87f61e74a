package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nixtest"
)

// TestMetricsRealNixPrometheus runs a real Prometheus (Debian's) scraping
// the proxy binary every second, with deploy/prometheus/rules.yml loaded,
// copies a closure through the proxy with real Nix twice (into two fresh
// stores), and checks through Prometheus's query API that the counters say
// what happened: the first copy missed every narinfo and NAR and served
// each NAR's FileSize from upstream, the second hit every one and served
// the same bytes from disk. It also runs every query of the Grafana
// dashboard against that Prometheus.
func TestMetricsRealNixPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped in -short mode")
	}
	nixtest.Require(t)
	promBin := requirePrometheus(t)
	step := stepLogger(t)
	// Prometheus first: its first scrape comes only after its target
	// reload, about 5 s after start, so it waits while the rest gets ready.
	// It scrapes the proxy's --metrics-listen address.
	metricsAddr := freeAddr(t)
	prom := startPrometheus(t, promBin, metricsAddr)
	step("prometheus ready at %s", prom.url)

	bin, err := proxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	c, cache := nixtest.BuildClosure(t, 1<<20)
	upstream, _ := nixtest.ServeDir(t, cache.Dir)
	paths, fileBytes := cacheContents(t, cache.Dir)
	if paths != len(c.Paths) {
		t.Fatalf("upstream holds %d narinfos, closure has %d paths", paths, len(c.Paths))
	}
	step("built a closure of %d paths, %d NAR bytes, into a signed upstream", paths, fileBytes)

	// The byte and file counts below are the upstream's files: no zstd
	// files made beside them (TestEndToEndRecompress covers those).
	p := startProxyArgs(t, bin, t.TempDir(), cache.PublicKey, []string{upstream}, "--metrics-listen", metricsAddr,
		"--recompress", "off")
	prom.waitFor(t, `up{job="nix-cache-proxy"}`, 1)
	step("prometheus scrapes the proxy at %s (serving at %s)", metricsAddr, p.url)

	lookups := func(kind, result string) string {
		return fmt.Sprintf(`nix_cache_proxy_cache_lookups_total{job="nix-cache-proxy", kind=%q, result=%q}`, kind, result)
	}
	served := func(source string) string {
		return fmt.Sprintf(`nix_cache_proxy_served_bytes_total{job="nix-cache-proxy", source=%q}`, source)
	}
	up := fmt.Sprintf(`{job="nix-cache-proxy", upstream=%q}`, upstream)

	copyThrough(t, "1, cold", p.url, cache.PublicKey, c)
	step("nix copy 1 (cold proxy) done")
	// The upstream counters move last (the downloads finish after the
	// clients have their bytes), so wait for them, then check the rest.
	prom.waitFor(t, "nix_cache_proxy_upstream_fetched_bytes_total"+up, float64(fileBytes))
	prom.waitFor(t, `sum(nix_cache_proxy_download_clients) + sum(nix_cache_proxy_downloads_in_flight)`, 0)
	prom.waitFor(t, `sum(nix_cache_proxy_http_requests_total{route="nar", code="200"})`, float64(paths))
	// Nix 2.8 first asks for every path's narinfo at once (HEAD, one
	// request per path, all distinct), and only then, one request at a
	// time, again and again (with narinfo-cache-positive-ttl = 0 it
	// keeps nothing): so exactly one miss per path, and every other
	// narinfo request, as many as the access log shows, is a hit. It
	// fetches each NAR once.
	narinfos := countRequests(t, p.output.Bytes(), "narinfo")
	if narinfos <= paths {
		t.Fatalf("access log shows %d narinfo requests, want more than %d", narinfos, paths)
	}
	prom.expect(t, map[string]float64{
		lookups("narinfo", "miss"): float64(paths),
		lookups("narinfo", "hit"):  float64(narinfos - paths),
		lookups("nar", "miss"):     float64(paths),
		lookups("nar", "hit"):      0,
		served("upstream"):         float64(fileBytes),
		served("cache"):            0,
		`sum(nix_cache_proxy_upstream_requests_total{kind="narinfo", outcome="ok"})`: float64(paths),
		`sum(nix_cache_proxy_upstream_requests_total{kind="nar", outcome="ok"})`:     float64(paths),
		`sum(nix_cache_proxy_upstream_requests_total{outcome!="ok"}) or vector(0)`:   0,
		`nix_cache_proxy_misses_recorded_total{outcome="fetched"}`:                   float64(paths),
		`sum(nix_cache_proxy_verification_failures_total)`:                           0,
		`nix_cache_proxy_store_size_bytes`:                                           float64(fileBytes),
		`nix_cache_proxy_store_entries{kind="nar"}`:                                  float64(paths),
		`nix_cache_proxy_store_entries{kind="narinfo"}`:                              float64(paths),
		`sum(nix_cache_proxy_upstream_request_duration_seconds_count{kind="nar"})`:   float64(paths),
	})
	step("copy 1: %d narinfo misses and %d hits, %d NAR misses, %d bytes from upstream, in Prometheus",
		paths, narinfos-paths, paths, fileBytes)

	copyThrough(t, "2, warm", p.url, cache.PublicKey, c)
	step("nix copy 2 (warm proxy) done")
	prom.waitFor(t, `sum(nix_cache_proxy_http_requests_total{route="nar", code="200"})`, float64(2*paths))
	narinfos = countRequests(t, p.output.Bytes(), "narinfo")
	prom.expect(t, map[string]float64{
		lookups("narinfo", "miss"):                                  float64(paths),
		lookups("narinfo", "hit"):                                   float64(narinfos - paths),
		lookups("nar", "miss"):                                      float64(paths),
		lookups("nar", "hit"):                                       float64(paths),
		served("upstream"):                                          float64(fileBytes),
		served("cache"):                                             float64(fileBytes),
		"nix_cache_proxy_upstream_fetched_bytes_total" + up:         float64(fileBytes),
		`sum(nix_cache_proxy_upstream_requests_total)`:              float64(2 * paths),
		`sum(nix_cache_proxy_http_requests_total{route="narinfo"})`: float64(narinfos),
	})
	step("copy 2: narinfo hits up to %d, %d NAR hits, %d bytes from the cache, in Prometheus",
		narinfos-paths, paths, fileBytes)

	prom.checkRules(t)
	prom.checkDashboard(t, filepath.Join("..", "..", "deploy", "grafana", "nix-cache-proxy.json"))
	step("rules.yml loaded and healthy; every dashboard query runs")
	prom.stop(t)
	p.terminate(t)
}

// countRequests counts the access log lines (--log-level debug) of
// requests answered 200 on route: the clients' view, independent of the
// metrics.
func countRequests(t *testing.T, log []byte, route string) int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^.* msg=request .* route=` + regexp.QuoteMeta(route) + ` status=200 .*$`)
	return len(re.FindAll(log, -1))
}

// cacheContents counts the narinfos of a file:// binary cache and sums
// their FileSize: what a client copying all of it downloads.
func cacheContents(t *testing.T, dir string) (paths int, fileBytes int64) {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.narinfo"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		text, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		ni, err := narinfo.Parse(text)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ni.FileSize == 0 {
			t.Fatalf("%s: no FileSize", name)
		}
		paths++
		fileBytes += int64(ni.FileSize)
	}
	return paths, fileBytes
}

// requirePrometheus returns the prometheus binary's path, or skips t (fails
// it when CI is set, as nixtest.Require does for nix).
func requirePrometheus(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("prometheus")
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatal("prometheus not available, and CI is set (install Debian's prometheus)")
	}
	t.Skip("prometheus not available (install Debian's prometheus)")
	return ""
}

// promServer is a running Prometheus server.
type promServer struct {
	url    string
	cmd    *exec.Cmd
	output *lockedBuffer
	done   chan struct{}
}

// startPrometheus runs Prometheus on a free loopback port with its TSDB in
// a temp dir, scraping target (host:port) every second as job
// nix-cache-proxy with deploy/prometheus/rules.yml loaded, and waits until
// it is ready. It is killed when t ends if stop was not called.
func startPrometheus(t *testing.T, bin, target string) *promServer {
	t.Helper()
	dir := t.TempDir()
	rules, err := filepath.Abs(filepath.Join("..", "..", "deploy", "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: nix-cache-proxy
    static_configs:
      - targets: [%q]
`, rules, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	pr := &promServer{
		url: "http://" + addr,
		cmd: exec.Command(bin, "--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
			"--web.listen-address="+addr, "--log.level=warn"),
		output: new(lockedBuffer),
		done:   make(chan struct{}),
	}
	pr.cmd.Stdout, pr.cmd.Stderr = pr.output, pr.output
	if err := pr.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = pr.cmd.Wait()
		close(pr.done)
	}()
	t.Cleanup(func() {
		_ = pr.cmd.Process.Kill()
		<-pr.done
		if t.Failed() {
			t.Logf("prometheus output:\n%s", pr.output.Bytes())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(pr.url + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return pr
			}
		}
		select {
		case <-pr.done:
			t.Fatalf("prometheus exited before it was ready:\n%s", pr.output.Bytes())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 20 s (last: %v)", err)
		}
	}
}

// stop sends SIGTERM and waits for Prometheus to exit.
func (pr *promServer) stop(t *testing.T) {
	t.Helper()
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.done:
	case <-time.After(10 * time.Second):
		t.Error("prometheus still running 10 s after SIGTERM")
	}
}

// api GETs /api/v1/<path> and decodes the answer's data into out.
func (pr *promServer) api(t *testing.T, path string, query url.Values, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pr.url+"/api/v1/"+path+"?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s %s: %s", path, query.Encode(), body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

// query runs an instant query whose result is at most one sample and
// returns its value; ok is false when the result is empty.
func (pr *promServer) query(t *testing.T, q string) (v float64, ok bool, err error) {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := pr.api(t, "query", url.Values{"query": {q}}, &data); err != nil {
		return 0, false, err
	}
	switch {
	case data.ResultType != "vector":
		return 0, false, fmt.Errorf("%s: result type %s, want vector", q, data.ResultType)
	case len(data.Result) == 0:
		return 0, false, nil
	case len(data.Result) > 1:
		return 0, false, fmt.Errorf("%s: %d series, want 1: %v", q, len(data.Result), data.Result)
	}
	s, _ := data.Result[0].Value[1].(string)
	v, err = strconv.ParseFloat(s, 64)
	return v, true, err
}

// waitFor polls q until its value is want, for at most 15 s: long enough
// for a few scrapes of a race-enabled proxy.
func (pr *promServer) waitFor(t *testing.T, q string, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v, ok, err := pr.query(t, q)
		if err == nil && ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v, err %v) after 15 s, want %v", q, v, ok, err, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// expect checks the current value of each query.
func (pr *promServer) expect(t *testing.T, want map[string]float64) {
	t.Helper()
	for q, w := range want {
		v, ok, err := pr.query(t, q)
		switch {
		case err != nil:
			t.Errorf("%s: %v", q, err)
		case !ok:
			t.Errorf("%s: no such series in Prometheus, want %v", q, w)
		case v != w:
			t.Errorf("%s = %v, want %v", q, v, w)
		}
	}
}

// checkRules asserts Prometheus loaded every rule of rules.yml and
// evaluates them without error against the proxy's real series.
func (pr *promServer) checkRules(t *testing.T) {
	t.Helper()
	var data struct {
		Groups []struct {
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := pr.api(t, "rules", url.Values{}, &data); err != nil {
			t.Fatal(err)
		}
		n, healthy := 0, 0
		for _, g := range data.Groups {
			for _, r := range g.Rules {
				n++
				if r.Health == "ok" {
					healthy++
				} else if r.Health == "err" {
					t.Errorf("rule %s: %s", r.Name, r.LastError)
				}
			}
		}
		if n < 5 {
			t.Fatalf("prometheus loaded %d rules, want at least 5", n)
		}
		if healthy == n || t.Failed() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rules healthy after 10 s", healthy, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkDashboard runs every query of the Grafana dashboard (with its
// variables set to match everything) and fails on any Prometheus error.
func (pr *promServer) checkDashboard(t *testing.T, file string) {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(text, &dash); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$instance", ".*")
	known := regexp.MustCompile(`\bnix_cache_proxy_[a-z_]+`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			q := vars.Replace(tg.Expr)
			var data json.RawMessage
			if err := pr.api(t, "query", url.Values{"query": {q}}, &data); err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
			}
			// Every metric the dashboard names exists.
			for _, name := range known.FindAllString(q, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_count")
				if v, ok, err := pr.query(t, "count({__name__=~\""+base+"(_bucket)?\"}) > 0"); err != nil || !ok || v == 0 {
					t.Errorf("panel %q: metric %s not in Prometheus (%v)", p.Title, name, err)
				}
			}
		}
	}
	if n < 10 {
		t.Errorf("dashboard has %d queries, want at least 10", n)
	}
}
