package warm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Lock is a flake's locked source, from `nix flake metadata --json`.
type Lock struct {
	URL          string    `json:"url"`           // the locked URL
	Rev          string    `json:"rev,omitempty"` // git revision; none for path: flakes and dirty trees
	NarHash      string    `json:"nar_hash"`
	LastModified time.Time `json:"last_modified"`
}

// Revision names the locked source: its git revision, else its NAR hash
// (a path: flake or a dirty tree has no revision, but a new content has a
// new hash).
func (l Lock) Revision() string {
	if l.Rev != "" {
		return l.Rev
	}
	return l.NarHash
}

// Short is Revision shortened for people (see ShortRev).
func (l Lock) Short() string { return ShortRev(l.Revision()) }

// ShortRev shortens a Revision for people: 12 characters of a git
// revision, or of a NAR hash after its "sha256-".
func ShortRev(rev string) string {
	if _, after, ok := strings.Cut(rev, "-"); ok {
		rev = after
	}
	return rev[:min(len(rev), 12)]
}

// Metadata locks flake (a flake reference without an attribute) and
// returns its locked source.
func (n *Nix) Metadata(ctx context.Context, flake string) (Lock, error) {
	var l Lock
	err := n.run(ctx, func(r io.Reader) error {
		var err error
		l, err = parseMetadata(r)
		return err
	}, metadataArgs(n.Refresh, flake)...)
	return l, err
}

func metadataArgs(refresh bool, flake string) []string {
	args := []string{"flake", "metadata", "--json"}
	if refresh {
		args = append(args, "--refresh")
	}
	return append(args, flake)
}

func parseMetadata(r io.Reader) (Lock, error) {
	var m struct {
		URL    string `json:"url"`
		Locked struct {
			Rev          string `json:"rev"`
			NarHash      string `json:"narHash"`
			LastModified int64  `json:"lastModified"`
		} `json:"locked"`
	}
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return Lock{}, err
	}
	if m.Locked.NarHash == "" && m.Locked.Rev == "" {
		return Lock{}, fmt.Errorf("no locked revision or narHash in the metadata")
	}
	l := Lock{URL: m.URL, Rev: m.Locked.Rev, NarHash: m.Locked.NarHash}
	if m.Locked.LastModified > 0 {
		l.LastModified = time.Unix(m.Locked.LastModified, 0).UTC()
	}
	return l, nil
}
