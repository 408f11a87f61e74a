package main

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// A --max-size below what the cache holds is accepted (lowering the bound
// is how an admin shrinks a cache), but never silently: a bound given in
// the wrong unit once emptied a cache. serve logs what eviction is about
// to remove before it starts; check-config warns when it can see the
// cache dir.

// logOverBound logs, before the first eviction pass, the NARs a --max-size
// below what the cache holds will evict (a dry run of that pass). With
// --storage s3:// the bound is the bucket's, which the fleet keeps: not
// this disk.
func logOverBound(ctx context.Context, s *stack, cfg *serveConfig, log *slog.Logger) {
	if cfg.maxSize == 0 || cfg.storage != "" {
		return
	}
	held := s.store.NARBytes() + s.store.IndexSize()
	if held <= cfg.maxSize {
		return
	}
	rep, err := s.evict.Pass(ctx, true)
	if err != nil {
		log.Warn("--max-size is below what the cache holds; eviction starts now", "max_size", formatSize(cfg.maxSize),
			"holds", formatBytes(held), "nars", s.store.NARCount(), "err", err)
		return
	}
	var bytes int64
	for _, e := range rep.Evicted {
		bytes += e.Bytes
	}
	log.Warn(fmt.Sprintf("--max-size %s is below what the cache holds (%s, %d NARs): evicting %d NARs (%s), the least recently used, now",
		formatSize(cfg.maxSize), formatBytes(held), s.store.NARCount(), len(rep.Evicted), formatBytes(bytes)),
		"max_size_bytes", cfg.maxSize, "held_bytes", held, "evict_files", len(rep.Evicted), "evict_bytes", bytes)
}

// overBoundWarning is check-config's warning when the cache dir it can
// read holds more than --max-size, or "" when it does not (or cannot be
// read: check-config also runs in a build sandbox, without it). It reads
// the file sizes only, never the index, which a running server holds.
func overBoundWarning(cfg *serveConfig) string {
	if cfg.maxSize == 0 || cfg.storage != "" {
		return ""
	}
	files, held := 0, int64(0)
	if fi, err := os.Stat(filepath.Join(cfg.cacheDir, "index.db")); err == nil {
		held += fi.Size()
	}
	filepath.WalkDir(filepath.Join(cfg.cacheDir, "nar"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			files++
			held += fi.Size()
		}
		return nil
	})
	if held <= cfg.maxSize {
		return ""
	}
	return fmt.Sprintf("warning: --max-size %s is below what %s holds (%s: %d NAR files and the index): serve will evict the least recently used NARs until the cache is under it",
		formatSize(cfg.maxSize), cfg.cacheDir, formatBytes(held), files)
}
