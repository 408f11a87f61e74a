package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// ResumableFiles is a NARFiles that keeps a large download's part file
// across restarts, with a note of how far it got, so the next fetch of the
// same NAR carries on from there instead of starting over. A NAR's name is
// its file hash, so the bytes at each offset never differ between tries.
type ResumableFiles interface {
	// CreateResumable opens the part file for name, continuing the one a
	// previous process left if keep accepts its note (what it last saved
	// with SaveNote); otherwise the file starts empty and note is nil.
	CreateResumable(name string, keep func(note []byte) bool) (part ResumablePart, note []byte, err error)
}

// ResumablePart is a PartFile that can save a note of its progress.
type ResumablePart interface {
	PartFile
	// SaveNote makes the bytes written so far durable, then note, which
	// should describe no more than those bytes.
	SaveNote(note []byte) error
}

// partialMaxAge is how long a partial download nobody resumed is kept.
const partialMaxAge = 7 * 24 * time.Hour

// CreateResumable implements ResumableFiles: dir/partial/<name> and its
// note <name>.note, kept by OpenDirFiles unless older than a week.
func (d *DirFiles) CreateResumable(name string, keep func([]byte) bool) (ResumablePart, []byte, error) {
	path := filepath.Join(d.dir, "partial", name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("create partial file: %w", err)
	}
	note, err := os.ReadFile(path + ".note")
	if errors.Is(err, fs.ErrNotExist) || err == nil && !keep(note) {
		// Bytes without a note (or with another's) are not known good.
		note, err = nil, errors.Join(os.Remove(path+".note"), f.Truncate(0))
		if errors.Is(err, fs.ErrNotExist) {
			err = f.Truncate(0)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read partial note: %w", err)
	}
	return &resumablePart{dirPart: dirPart{f: f, final: d.path(name)}, note: path + ".note"}, note, nil
}

type resumablePart struct {
	dirPart
	note string
}

func (p *resumablePart) SaveNote(note []byte) error {
	if err := p.f.Sync(); err != nil {
		return err
	}
	tmp := p.note + ".tmp"
	if err := os.WriteFile(tmp, note, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, p.note)
}

func (p *resumablePart) Commit() (int64, error) {
	os.Remove(p.note) // first: a crash after the rename leaves no stale note
	return p.dirPart.Commit()
}

func (p *resumablePart) Discard() error {
	if p.done {
		return nil
	}
	os.Remove(p.note)
	return p.dirPart.Discard()
}

// sweepPartials removes the partial downloads older than maxAge.
func sweepPartials(dir string, maxAge time.Duration) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("sweep partial dir: %w", err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || time.Since(info.ModTime()) < maxAge {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
	}
	return nil
}

// CreateResumableNAR is CreateNAR for a large download that a later
// process may carry on: note is the progress note saved last if keep
// accepts it (nil: start over), and ok false when the files underneath
// cannot resume (then it is CreateNAR).
func (s *Store) CreateResumableNAR(ctx context.Context, name string, keep func(note []byte) bool) (w *Writer, note []byte, ok bool, err error) {
	rf, can := s.files.(ResumableFiles)
	if !can {
		w, err = s.CreateNAR(ctx, name)
		return w, nil, false, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, false, err
	}
	s.live.add(name)
	part, note, err := rf.CreateResumable(name, keep)
	if err != nil {
		s.live.done(name)
		return nil, nil, false, err
	}
	w = &Writer{s: s, name: name, part: part, syncReq: make(chan struct{}, 1), syncDone: make(chan struct{})}
	go w.syncLoop()
	return w, note, true, nil
}

// SaveNote saves a progress note for a resumable download (see
// CreateResumableNAR); it does nothing for another.
func (w *Writer) SaveNote(note []byte) error {
	if rp, ok := w.part.(ResumablePart); ok {
		return rp.SaveNote(note)
	}
	return nil
}

// Suspend ends a resumable download without finishing it: the part file
// and its note stay for the next process or try. For any other download
// it is Cancel. It is a no-op after Commit or Cancel.
func (w *Writer) Suspend() error {
	rp, ok := w.part.(*resumablePart)
	if !ok || w.done {
		return w.Cancel()
	}
	w.done = true
	defer w.s.live.done(w.name)
	w.stopSync()
	rp.done = true
	return rp.f.Close()
}
