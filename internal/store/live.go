package store

import (
	"strings"
	"sync"
)

// liveFiles counts the NAR names being written by this process, from
// CreateNAR until the Writer's index row is in (or it is cancelled). Verify
// leaves their temp files alone, and does not mistake a file renamed into
// place but not yet indexed for one without a row.
type liveFiles struct {
	mu    sync.Mutex
	names map[string]int
}

func (l *liveFiles) add(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.names == nil {
		l.names = make(map[string]int)
	}
	l.names[name]++
}

func (l *liveFiles) done(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.names[name]--; l.names[name] <= 0 {
		delete(l.names, name)
	}
}

// hasLocked reports whether name is being written; l.mu must be held.
func (l *liveFiles) hasLocked(name string) bool { return l.names[name] > 0 }

// has reports whether name is being written.
func (l *liveFiles) has(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.hasLocked(name)
}

// tempOwner is the name a temp file in tmp/ is written for: temp files are
// "<name>.<random>" (os.CreateTemp with the pattern "<name>.*").
func tempOwner(temp string) string {
	if i := strings.LastIndexByte(temp, '.'); i > 0 {
		return temp[:i]
	}
	return temp
}
