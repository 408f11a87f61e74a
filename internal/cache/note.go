package cache

import (
	"encoding/json"
	"sync"
)

// fetchNote is what a resumable download saves of its progress: the NAR's
// size and how far each segment got, all of it durable on disk when saved.
type fetchNote struct {
	Size int64      `json:"size"`
	Segs [][3]int64 `json:"segments"` // start, end, bytes landed from start
}

// parseNote returns the note if it describes a NAR of size bytes, else nil
// (no note, or one from something else: start over).
func parseNote(b []byte, size int64) *fetchNote {
	var n fetchNote
	if len(b) == 0 || json.Unmarshal(b, &n) != nil || n.Size != size || len(n.Segs) == 0 {
		return nil
	}
	at := int64(0)
	for _, s := range n.Segs {
		if s[0] != at || s[1] < s[0] || s[2] < 0 || s[2] > s[1]-s[0] {
			return nil
		}
		at = s[1]
	}
	if at != size {
		return nil
	}
	return &n
}

// segments are the note's segments to carry on with: the done ones
// complete, the others pending their connection.
func (n *fetchNote) segments() []*segment {
	segs := make([]*segment, len(n.Segs))
	for i, s := range n.Segs {
		segs[i] = &segment{start: s[0], end: s[1], done: s[2]}
		if s[2] == s[1]-s[0] {
			segs[i].state = segComplete
		}
	}
	segs[0].state = max(segs[0].state, segLive)
	return segs
}

// durableEvery is how many notes pass between two durable ones (each an
// fsync of the part file): 64 MiB at the default NoteEvery.
const durableEvery = 8

// noter saves a rangeFetch's notes, one at a time, off the download path.
type noter struct {
	save    func([]byte) error // durable; nil: not resumable
	mark    func([]byte) error // good until the machine restarts
	every   int64              // fetched bytes between two notes
	mu      sync.Mutex         // one save at a time
	wg      sync.WaitGroup
	pending bool
}

// snapshot returns the note for f's segments; f.mu must be held.
func (f *rangeFetch) snapshot() []byte {
	n := fetchNote{Size: f.size}
	for _, s := range f.segs {
		n.Segs = append(n.Segs, [3]int64{s.start, s.end, s.done})
	}
	b, _ := json.Marshal(n)
	return b
}

// maybeSave saves a note in the background once every more bytes were
// fetched, durable when durableEvery of them were; f.mu must be held.
// What the snapshot counts was written before it was taken, so the save
// covers it: the durable save's fsync, or the page cache for a mark.
func (f *rangeFetch) maybeSave() {
	if f.notes.save == nil || f.size < 0 || f.notes.pending || f.fetched-f.markedAt < f.notes.every {
		return
	}
	save := f.notes.mark
	if f.fetched-f.savedAt >= durableEvery*f.notes.every || save == nil {
		save, f.savedAt = f.notes.save, f.fetched
	}
	f.markedAt, f.notes.pending = f.fetched, true
	note := f.snapshot()
	f.notes.wg.Go(func() {
		f.notes.mu.Lock()
		save(note) // a failure costs only a later resume's head start
		f.notes.mu.Unlock()
		f.mu.Lock()
		f.notes.pending = false
		f.maybeSave() // for what landed meanwhile: nothing else may land
		f.mu.Unlock()
	})
}

// saveNow saves the note as it stands, after any save in flight.
func (f *rangeFetch) saveNow() {
	f.notes.wg.Wait()
	if f.notes.save == nil || f.size < 0 {
		return
	}
	f.mu.Lock()
	note := f.snapshot()
	f.mu.Unlock()
	f.notes.save(note)
}
