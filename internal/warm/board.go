package warm

import (
	"slices"
	"strings"
	"sync"
	"time"
)

// Status is what the status page and /metrics show of one warmed
// attribute: its last warm, and its last evaluation error if the last
// try failed.
type Status struct {
	Target       string    `json:"target"` // FLAKEREF#ATTR
	Rev          string    `json:"rev,omitempty"`
	Short        string    `json:"short,omitempty"`
	LastModified time.Time `json:"last_modified,omitzero"`
	Paths        int       `json:"paths"`
	Cached       int       `json:"cached"`
	Upstream     int       `json:"upstream"`
	Missing      int       `json:"missing"`
	Unknown      int       `json:"unknown"`
	Builds       int       `json:"builds"`
	Warmed       time.Time `json:"warmed,omitzero"` // last warm
	// IncompleteSince is when the warms began finding something that
	// must be built (zero while everything substitutes).
	IncompleteSince time.Time `json:"incomplete_since,omitzero"`
	Error           string    `json:"error,omitempty"` // the last try's, if it failed
	ErrorAt         time.Time `json:"error_at,omitzero"`
	Failures        int       `json:"failures"`          // tries failed in a row
	Errors          int       `json:"errors"`            // tries failed since the start
	NextTry         time.Time `json:"next_try,omitzero"` // after a failure
}

// Complete reports whether the last warm found everything substitutes.
func (s Status) Complete() bool { return !s.Warmed.IsZero() && s.Missing == 0 && s.Unknown == 0 }

// Board keeps the Status of every attribute warmed since the start, for
// the status page and /metrics. Safe for concurrent use.
type Board struct {
	mu sync.Mutex
	m  map[string]*Status
}

// NewBoard returns an empty Board.
func NewBoard() *Board { return &Board{m: map[string]*Status{}} }

func (b *Board) get(target string) *Status {
	s := b.m[target]
	if s == nil {
		s = &Status{Target: target}
		b.m[target] = s
	}
	return s
}

// Warmed records a warm of r's revision.
func (b *Board) Warmed(r Report, at time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(r.Target.String())
	s.Rev, s.Short, s.LastModified = r.Lock.Revision(), r.Lock.Short(), r.Lock.LastModified
	s.Paths, s.Cached, s.Upstream, s.Missing, s.Unknown, s.Builds = r.Paths, r.Cached, r.Upstream, r.Missing, r.Unknown, len(r.Build)
	s.Warmed = at
	s.Error, s.Failures, s.NextTry = "", 0, time.Time{}
	switch {
	case r.Complete():
		s.IncompleteSince = time.Time{}
	case s.IncompleteSince.IsZero():
		s.IncompleteSince = at
	}
}

// Failed records a try of target that failed with err; the next is at
// next.
func (b *Board) Failed(target string, err error, at, next time.Time) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(target)
	s.Error, s.ErrorAt, s.NextTry = err.Error(), at, next
	s.Failures++
	s.Errors++
}

// List returns every attribute's Status, by target.
func (b *Board) List() []Status {
	if b == nil {
		return []Status{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]Status, 0, len(b.m))
	for _, s := range b.m {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Target, b.Target) })
	return out
}
