package store

import (
	"bytes"
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
	// MarkNote saves note without making anything durable: cheap enough to
	// call every few MiB. It starts writing the bytes back, so that the
	// fsync at commit has little left to do. It holds until the machine restarts (a killed
	// process leaves its writes in the page cache; a machine that crashed
	// may have lost them), so CreateResumable takes it only on the boot
	// that wrote it, and SaveNote's note otherwise. It does nothing where
	// the boot cannot be told apart.
	MarkNote(note []byte) error
}

// partialMaxAge is how long a partial download nobody resumed is kept.
const partialMaxAge = 7 * 24 * time.Hour

// CreateResumable implements ResumableFiles: dir/partial/<name> and its
// notes, <name>.note (durable) and <name>.mark (this boot's, see
// MarkNote), kept by OpenDirFiles unless older than a week.
func (d *DirFiles) CreateResumable(name string, keep func([]byte) bool) (ResumablePart, []byte, error) {
	path := filepath.Join(d.dir, "partial", name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("create partial file: %w", err)
	}
	p := &resumablePart{dirPart: dirPart{d: d, f: f, final: d.path(name)}, note: path + ".note", mark: path + ".mark", boot: d.boot}
	if note := p.readMark(); note != nil && keep(note) {
		return p, note, nil
	}
	os.Remove(p.mark)
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
	return p, note, nil
}

type resumablePart struct {
	dirPart
	note string // the durable note
	mark string // the note of this boot: a line with the boot id, then the note
	boot string // this boot's id; "" when unknown (no marks)
}

func (p *resumablePart) SaveNote(note []byte) error {
	if err := p.f.Sync(); err != nil {
		return err
	}
	if err := replaceFileSynced(p.note, note); err != nil {
		return err
	}
	// The durable note is the newest now: a mark older than it would only
	// send a later resume back.
	os.Remove(p.mark)
	return nil
}

func (p *resumablePart) MarkNote(note []byte) error {
	startWriteback(p.f)
	if p.boot == "" {
		return nil
	}
	return replaceFile(p.mark, append([]byte(p.boot+"\n"), note...))
}

// readMark returns the mark's note if this boot wrote it, else nil.
func (p *resumablePart) readMark() []byte {
	b, err := os.ReadFile(p.mark)
	if err != nil || p.boot == "" {
		return nil
	}
	boot, note, ok := bytes.Cut(b, []byte("\n"))
	if !ok || string(boot) != p.boot {
		return nil
	}
	return note
}

// replaceFile writes b to path whole, through a temp file and a rename:
// a reader finds the old bytes or the new, never a mix.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// replaceFileSynced is replaceFile made durable: the new bytes, and the
// names of the note and of the partial file beside it (a note that
// outlives a power cut while the partial file's name does not would
// resume over an empty file).
func replaceFileSynced(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if err := errors.Join(err, f.Close()); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func (p *resumablePart) Commit() (int64, error) {
	// First: a crash after the rename leaves no stale note.
	os.Remove(p.mark)
	os.Remove(p.note)
	return p.dirPart.Commit()
}

func (p *resumablePart) Discard() error {
	if p.done {
		return nil
	}
	os.Remove(p.mark)
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

// MarkNote saves a progress note good until the machine restarts (see
// ResumablePart.MarkNote); it does nothing for another download.
func (w *Writer) MarkNote(note []byte) error {
	if rp, ok := w.part.(ResumablePart); ok {
		return rp.MarkNote(note)
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
