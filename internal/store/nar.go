package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/crashpoint"
)

// narRow is the index row of a NAR file present on disk.
type narRow struct {
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
	// Access is when it was last served, as of the last FlushAccess;
	// zero until then (Stored stands in).
	Access time.Time `json:"access,omitzero"`
	// Refill says whether the NAR can be fetched again once evicted: its
	// source row's NARSource.Refillable, kept here by every writer of
	// either row in the same transaction (see refill.go), so eviction
	// reads these small rows and never the sources.
	Refill refill `json:"refill,omitempty"`
}

// OpenNAR opens the NAR file called name for reading, or returns ErrNotFound.
// An index row whose file has vanished (deleted by hand, lost in a crash) is
// dropped here, so the next request fetches the NAR again.
//
// With shared storage, a NAR this node's index lacks is looked for there:
// another node may have stored it.
func (s *Store) OpenNAR(ctx context.Context, name string) (NARFile, error) {
	if _, err := s.get(ctx, bucketNAR, name); errors.Is(err, ErrNotFound) {
		f, err := s.openShared(ctx, name)
		if err == nil {
			s.touch(name)
		}
		return f, err
	} else if err != nil {
		return nil, err
	}
	f, err := s.files.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		if derr := s.dropNAR(name); derr != nil {
			return nil, derr
		}
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open NAR %s: %w", name, err)
	}
	s.touch(name)
	return f, nil
}

// touch records that the NAR name is being served now.
func (s *Store) touch(name string) {
	now := time.Now()
	s.access.touch(name, now)
	if s.accessed != nil {
		s.accessed(name, now)
	}
}

// HasNAR reports whether the NAR called name is on disk. Like OpenNAR it
// drops an index row whose file has vanished.
func (s *Store) HasNAR(ctx context.Context, name string) (bool, error) {
	if _, err := s.get(ctx, bucketNAR, name); errors.Is(err, ErrNotFound) {
		f, err := s.openShared(ctx, name)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return true, f.Close()
	} else if err != nil {
		return false, err
	}
	_, err := s.files.Stat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, s.dropNAR(name)
	}
	if err != nil {
		return false, fmt.Errorf("stat NAR %s: %w", name, err)
	}
	return true, nil
}

// dropNAR deletes the index row of a NAR file, keeping the totals right.
func (s *Store) dropNAR(name string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		n := s.narRows(tx)
		if _, _, err := n.delete([]byte(name)); err != nil {
			return err
		}
		return n.done()
	})
}

func (s *Store) counted(files, bytes int64) {
	s.narCount.Add(files)
	s.narBytes.Add(bytes)
}

// Writer receives a NAR file. Nothing it wrote is visible to OpenNAR until
// Commit returns nil; Cancel (or a failed Commit) leaves no trace.
type Writer struct {
	s    *Store
	name string
	part PartFile
	done bool

	// A background fsync every syncEvery bytes overlaps the disk's
	// writeback with the download, so Commit's final fsync of a multi-GB
	// file is short instead of a pause as long as the disk is slow.
	unsynced atomic.Int64
	appended atomic.Int64 // bytes written in all
	syncReq  chan struct{}
	syncDone chan struct{}
}

const syncEvery = 64 << 20

// CreateNAR starts writing the NAR file called name.
func (s *Store) CreateNAR(ctx context.Context, name string) (*Writer, error) {
	return s.createNAR(ctx, name, s.files.Create)
}

// JoiningFiles is a NARFiles shared with other nodes (an S3 bucket) that
// can receive a file another node is writing there: CreateJoined's part
// keeps what it is given for its readers alone, and its Commit waits for
// the other node's file (and writes the file itself only if that never
// comes).
type JoiningFiles interface {
	CreateJoined(name string) (PartFile, error)
}

// CreateJoinedNAR is CreateNAR for a NAR another node is writing to the
// shared files, whose download this one streams: it is not written
// twice. Without shared files it is CreateNAR.
func (s *Store) CreateJoinedNAR(ctx context.Context, name string) (*Writer, error) {
	if jf, ok := s.files.(JoiningFiles); ok {
		return s.createNAR(ctx, name, jf.CreateJoined)
	}
	return s.CreateNAR(ctx, name)
}

func (s *Store) createNAR(ctx context.Context, name string, create func(string) (PartFile, error)) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.live.add(name)
	part, err := create(name)
	if err != nil {
		s.live.done(name)
		return nil, err
	}
	w := &Writer{s: s, name: name, part: part, syncReq: make(chan struct{}, 1), syncDone: make(chan struct{})}
	go w.syncLoop()
	return w, nil
}

func (w *Writer) syncLoop() {
	defer close(w.syncDone)
	for range w.syncReq {
		// An error here shows up again in Commit's own fsync.
		w.part.Sync()
	}
}

// stopSync ends the background fsyncs; it is called once, at finish.
func (w *Writer) stopSync() {
	close(w.syncReq)
	<-w.syncDone
}

// Write appends to the file.
func (w *Writer) Write(p []byte) (int, error) {
	n, err := w.part.Write(p)
	w.wrote(n)
	return n, err
}

// RandomAccess reports whether WriteAt takes any offset, so a download can
// land in several ranges at once; without it, WriteAt only appends.
func (w *Writer) RandomAccess() bool {
	_, ok := w.part.(io.WriterAt)
	return ok
}

// WriteAt writes p at off. Calls for disjoint ranges may run concurrently
// when RandomAccess; otherwise off must be where the file ends and calls
// must not overlap.
func (w *Writer) WriteAt(p []byte, off int64) (int, error) {
	wa, ok := w.part.(io.WriterAt)
	if !ok {
		if off != w.appended.Load() {
			return 0, fmt.Errorf("store: write at %d of a file that only appends, at %d", off, w.appended.Load())
		}
		return w.Write(p)
	}
	n, err := wa.WriteAt(p, off)
	w.wrote(n)
	return n, err
}

// wrote counts n bytes written, starting a background fsync every
// syncEvery bytes.
func (w *Writer) wrote(n int) {
	w.appended.Add(int64(n))
	if w.unsynced.Add(int64(n)) >= syncEvery {
		w.unsynced.Store(0)
		select {
		case w.syncReq <- struct{}{}:
		default: // one is running: the next request covers these bytes
		}
	}
}

// OpenPartial opens the file as written so far, for readers that follow
// the download while it is in progress. The handle stays readable after
// Commit or Cancel.
func (w *Writer) OpenPartial() (NARFile, error) { return w.part.OpenPartial() }

// Commit makes the file durable and visible and then indexes it, in that
// order, so a crash never leaves an index row without its file. With
// shared storage it then publishes the narinfo that names the file.
func (w *Writer) Commit(ctx context.Context) error {
	if w.done {
		return errors.New("store: writer already finished")
	}
	if err := ctx.Err(); err != nil {
		w.Cancel()
		return err
	}
	w.done = true
	defer w.s.live.done(w.name) // after the index row is in
	w.stopSync()
	if err := w.s.markCommitting(w.name); err != nil {
		w.part.Discard()
		return fmt.Errorf("commit NAR %s: %w", w.name, err)
	}
	crashpoint.Hit("nar-intent")
	// A NAR evicted a moment ago whose old file is still to be removed:
	// this new file must stay (see removeEvicted).
	w.s.rmMu.Lock()
	delete(w.s.removing, w.name)
	size, err := w.part.Commit()
	w.s.rmMu.Unlock()
	if err != nil {
		return fmt.Errorf("commit NAR %s: %w", w.name, err)
	}
	crashpoint.Hit("nar-renamed")
	if err := w.s.indexNAR(ctx, w.name, size); err != nil {
		return err
	}
	if w.s.accessed != nil {
		// Its first clients were served as it downloaded: that is its
		// first access (and more precise than the bucket's write time).
		w.s.accessed(w.name, time.Now())
	}
	return w.s.publish(ctx, w.name)
}

// indexNAR records that the NAR file name, of size bytes, is stored.
func (s *Store) indexNAR(ctx context.Context, name string, size int64) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.writes.update(func(tx *bolt.Tx) error {
		n := s.narRows(tx)
		row := narRow{Size: size, Stored: time.Now().UTC(), Refill: refillOf(tx.Bucket(bucketNARSource).Get([]byte(name)))}
		if err := n.put([]byte(name), row); err != nil {
			return err
		}
		if err := tx.Bucket(bucketCommitting).Delete([]byte(name)); err != nil {
			return err
		}
		return n.done()
	})
}

// Cancel discards the file. It is a no-op after Commit or Cancel.
func (w *Writer) Cancel() error {
	if w.done {
		return nil
	}
	w.done = true
	defer w.s.live.done(w.name)
	w.stopSync()
	return w.part.Discard()
}
