package evict

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// An uploaded path has no upstream to fetch its NAR from again, so
// evicting its NAR alone would leave a narinfo no client can use. An
// upload leaves as a whole (store.DeletePath: narinfo and NAR), and only
// when nothing needs it: the variants --keep-latest no longer keeps (at
// gc, or at a pass that needs room), and, with Config.EvictUploads, the
// least recently served uploads like any other NAR. A client that still
// holds such a narinfo gets 404 for it and its NAR, and Nix falls back
// to another substituter or builds.

// Held says what keeps a pass from reaching its low watermark.
type Held struct {
	Short int64 `json:"short_bytes"` // bytes the pass could not free
	// Pinned are the NAR files of pinned paths and their closures; Kept
	// those of the variants --keep-latest keeps and their closures (less
	// the pinned ones); Uploads the uploaded NARs neither pins nor
	// variants keep, which only --evict-uploads lets a pass evict, and
	// those other cached paths reference.
	Pinned  Files `json:"pinned"`
	Kept    Files `json:"kept"`
	Uploads Files `json:"uploads"`
	Index   int64 `json:"index_bytes"` // the index counts toward --max-size too
}

// Files totals NAR files.
type Files struct {
	Files int   `json:"files"`
	Bytes int64 `json:"bytes"`
}

func (f *Files) add(size int64) { f.Files++; f.Bytes += size }

// hold counts a NAR a pass may not evict into h.
func (h *Held) hold(name string, size int64, refillable bool, pins, kept map[string]bool) {
	switch {
	case pins[name]:
		h.Pinned.add(size)
	case kept[name]:
		h.Kept.add(size)
	case !refillable:
		h.Uploads.add(size)
	}
}

// supersededUploads returns the uploaded variants no rule keeps any more
// and nothing protected needs, to be deleted with their narinfos; sizes
// are those of the NARs on disk (0 for one that is not).
func (e *Evictor) supersededUploads(ctx context.Context, v *variants, keep map[string]bool) ([]Evicted, error) {
	left := v.left()
	var names []string
	for _, x := range left {
		names = append(names, x.NAR)
	}
	refill, err := e.st.Refillable(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("superseded variants: %w", err)
	}
	uses, err := e.st.LookupNARs(ctx, names)
	if err != nil {
		return nil, fmt.Errorf("superseded variants: %w", err)
	}
	var out []Evicted
	seen := map[string]bool{}
	for _, x := range left {
		if refill[x.NAR] || keep[x.NAR] || seen[x.Hash] {
			continue
		}
		seen[x.Hash] = true
		u := uses[x.NAR]
		out = append(out, Evicted{NAR: x.NAR, StorePath: x.StorePath, Hash: x.Hash, Bytes: u.Size,
			Access: time.Unix(0, u.Access).UTC(), Reason: ReasonRetention, Removed: true})
	}
	return out, nil
}

// claimUploads fills in the store path of the uploaded NARs a pass chose
// (Removed) from their source rows, and drops those no narinfo claims yet
// (an upload still waiting for its narinfo is not eviction's).
func (e *Evictor) claimUploads(ctx context.Context, chosen []Evicted) ([]Evicted, []Evicted, error) {
	out := chosen[:0]
	var dropped []Evicted
	for _, c := range chosen {
		if c.Removed && c.Hash == "" {
			src, err := e.st.NARSource(ctx, c.NAR)
			if errors.Is(err, store.ErrNotFound) || err == nil && src.Hash == "" {
				dropped = append(dropped, c)
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("NAR source %s: %w", c.NAR, err)
			}
			c.Hash, c.StorePath = src.Hash, src.StorePath
		}
		out = append(out, c)
	}
	return out, dropped, nil
}

// referenced takes out of chosen the uploads a cached path that stays
// references (Nix fails a path whose reference is missing), and returns
// them: one walk of the narinfos, only when uploads were chosen.
func (e *Evictor) referenced(ctx context.Context, chosen []Evicted) ([]Evicted, []Evicted, error) {
	gone := map[string]bool{}
	for _, c := range chosen {
		if c.Removed {
			gone[c.Hash] = true
		}
	}
	if len(gone) == 0 {
		return chosen, nil, nil
	}
	blocked := map[string]bool{}
	refs := map[string][]string{} // among the uploads chosen: who references whom
	err := e.st.WalkNarInfoUse(ctx, time.Time{}, func(u *store.NarInfoUse) error {
		for _, r := range u.Refs {
			if !gone[r] {
				continue
			}
			if gone[u.Hash] {
				refs[u.Hash] = append(refs[u.Hash], r)
			} else {
				blocked[r] = true
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("walk narinfos for references to uploads: %w", err)
	}
	// An upload that stays keeps what it references.
	queue := make([]string, 0, len(blocked))
	for h := range blocked {
		queue = append(queue, h)
	}
	for len(queue) > 0 {
		h := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		for _, r := range refs[h] {
			if !blocked[r] {
				blocked[r] = true
				queue = append(queue, r)
			}
		}
	}
	out := chosen[:0]
	var held []Evicted
	for _, c := range chosen {
		if c.Removed && blocked[c.Hash] {
			held = append(held, c)
			continue
		}
		out = append(out, c)
	}
	return out, held, nil
}

// deletePaths deletes the uploads chosen with their narinfos and returns
// those deleted.
func (e *Evictor) deletePaths(ctx context.Context, chosen []Evicted, rep *Report) []Evicted {
	var out []Evicted
	for _, c := range chosen {
		if ctx.Err() != nil {
			break
		}
		d, err := e.st.DeletePath(ctx, c.Hash)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("delete %s: %v", c.StorePath, err))
			e.log.Warn("delete upload failed", "store_path", c.StorePath, "err", err)
			continue
		}
		c.Bytes = d.Bytes
		e.m.EvictedBytes.Add(float64(d.Bytes))
		e.m.Evictions.WithLabelValues(c.Reason).Inc()
		e.log.Info("deleted upload", "store_path", c.StorePath, "reason", c.Reason, "bytes", d.Bytes)
		out = append(out, c)
	}
	return out
}
