// Package verify proves a cache dir sound, or says what is not: every NAR
// file against the narinfo that names it (size and FileHash; NarHash and
// NarSize after decompressing, with Deep or when there is no FileHash),
// index rows without files, files without rows, stray temp files and
// bbolt's own consistency check. With Repair it drops what is bad (file
// and row, keeping the narinfo and where its NAR comes from, so the NAR is
// fetched again when asked for) and removes the strays.
//
// A pass runs beside a serving proxy: it reads the index in short read
// transactions, hashes files outside any, and every repair is one short
// write transaction that first makes sure the entry is still the one
// checked.
package verify

import (
	"context"
	"io/fs"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// Store is what a pass needs of the store.
type Store interface {
	// Stats gives the totals the progress is measured against.
	Stats(ctx context.Context) (store.Stats, error)
	// CheckIndex runs the index's own consistency check.
	CheckIndex(ctx context.Context) ([]error, error)
	// RebuildNAROrder mends faults wrapping store.ErrDerived.
	RebuildNAROrder(ctx context.Context) error
	// NAREntries pages through the indexed NAR files in name order.
	NAREntries(ctx context.Context, after string, limit int) ([]store.NAREntry, error)
	// NARIndexed reports whether a NAR still has its row.
	NARIndexed(ctx context.Context, name string) (bool, error)
	// OpenNARFile opens a NAR file; a missing one wraps fs.ErrNotExist.
	OpenNARFile(name string) (store.NARFile, error)
	// DropNAR removes a bad NAR's file (checked, or nil if it was
	// missing) and row, or returns store.ErrChanged or store.ErrBusy.
	DropNAR(ctx context.Context, name string, checked fs.FileInfo) error
	// Strays walks the files that should not be in the cache dir.
	Strays(ctx context.Context, validName func(string) bool, fn func(store.Stray) error) error
	// RemoveStray removes one, or returns store.ErrChanged or store.ErrBusy.
	RemoveStray(ctx context.Context, s store.Stray) error
}

var _ Store = (*store.Store)(nil)

// Request says what a pass does.
type Request struct {
	// Repair drops bad entries and removes strays.
	Repair bool `json:"repair"`
	// Deep also checks NarHash and NarSize of every NAR after
	// decompressing it (none, zstd, xz, bzip2, gzip). A NAR without a
	// FileHash gets that check anyway.
	Deep bool `json:"deep"`
}

// Kinds of problem.
const (
	KindIndex     = "index"     // bbolt's check failed, a row does not decode, or the NAR order or totals are off
	KindMissing   = "missing"   // an index row whose file is gone
	KindSize      = "size"      // the file's size is not FileSize (or the indexed size)
	KindHash      = "hash"      // the file's sha256 is not FileHash
	KindNAR       = "nar"       // the NAR inside does not decompress, or is not NarHash/NarSize
	KindUnindexed = "unindexed" // a NAR file no index row names
	KindStray     = "stray"     // a file in nar/ that is not a NAR name in its shard
	KindTemp      = "temp"      // a temp file no download is writing
)

// Problem is one bad entry.
type Problem struct {
	Name   string `json:"name"`   // the NAR name; for strays, the path in the cache dir
	Kind   string `json:"kind"`   // one of the Kind constants
	Detail string `json:"detail"` // what is wrong, for people
	// Repaired says the entry was dropped or removed (or had gone by
	// itself); RepairError why it could not be.
	Repaired    bool   `json:"repaired,omitempty"`
	RepairError string `json:"repair_error,omitempty"`
}
