package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
)

// TestMaxSizeBelowWhatTheCacheHolds: a bound below what the cache holds
// is accepted, but check-config warns and serve says what it evicts
// before it does. `--max-size 200` on a cache of four NARs once emptied
// it without a word but the count afterwards.
func TestMaxSizeBelowWhatTheCacheHolds(t *testing.T) {
	up := fakeupstream.New(t)
	dir := t.TempDir()
	common := []string{"--cache-dir", dir, "--upstream", up.URL(), "--trusted-public-key", up.PublicKey().String(),
		"--min-free", "0", "--negative-ttl", "0", "--miss-recheck", "0"}
	var paths []string
	for range 4 {
		paths = append(paths, up.Add(fakeupstream.Path{File: fakeupstream.RandomBytes(100 << 10), Compression: "none"}).StorePath)
	}
	var stderr bytes.Buffer
	args := append(append([]string{"prefetch", "--listen", freeAddr(t), "--recompress", "off"}, common...), paths...)
	if code := run(context.Background(), args, new(bytes.Buffer), &stderr); code != 0 {
		t.Fatalf("prefetch: exit %d: %s", code, stderr.String())
	}

	// check-config: valid, with a warning naming the bound and the cache.
	var stdout bytes.Buffer
	stderr.Reset()
	if code := run(context.Background(), append([]string{"check-config", "--max-size", "200KiB"}, common...), &stdout, &stderr); code != 0 {
		t.Fatalf("check-config: exit %d: %s", code, stderr.String())
	}
	if want := "warning: --max-size 200KiB is below what " + dir + " holds ("; !strings.Contains(stderr.String(), want) ||
		!strings.Contains(stderr.String(), "4 NAR files and the index") {
		t.Errorf("check-config's stderr %q lacks %q and the count of NAR files", stderr.String(), want)
	}
	stderr.Reset()
	if code := run(context.Background(), append([]string{"check-config", "--max-size", "1GiB"}, common...), &stdout, &stderr); code != 0 || stderr.Len() > 0 {
		t.Errorf("check-config under the bound: exit %d, stderr %q; want 0 and nothing", code, stderr.String())
	}

	// serve: the line comes before the eviction it announces.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &lockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0", "--max-size", "200KiB"}, common...), new(bytes.Buffer), out)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(string(out.Bytes()), "msg=evicted") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	log := string(out.Bytes())
	want := "--max-size 200KiB is below what the cache holds ("
	at, evicted := strings.Index(log, want), strings.Index(log, "msg=evicted")
	if at < 0 || evicted < 0 || at > evicted {
		t.Fatalf("serve's log lacks %q before its eviction:\n%s", want, log)
	}
	line := log[at:]
	line = line[:strings.IndexByte(line, '\n')]
	// 400 KiB of NARs down to 90 % of 200 KiB (less the index): three go.
	for _, w := range []string{"4 NARs): evicting 3 NARs (300.0 KiB), the least recently used, now", "evict_files=3", "evict_bytes=307200"} {
		if !strings.Contains(line, w) {
			t.Errorf("the line %q lacks %q", line, w)
		}
	}
}
