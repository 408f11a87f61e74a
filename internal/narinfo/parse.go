package narinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"

	gonix "github.com/nix-community/go-nix/pkg/narinfo"
	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"
)

// Info is a parsed narinfo. It is go-nix's type: this package adds the
// tolerant parser and the policy around it.
type Info = gonix.NarInfo

// maxSize bounds a narinfo body: real ones are a few KiB, a path with
// thousands of references some hundreds.
const maxSize = 4 << 20

// Parse reads a narinfo the way Nix does: unknown keys are ignored, a missing
// Compression means bzip2, FileHash and FileSize may be absent. StorePath,
// URL, NarHash and NarSize are required, as Nix requires them.
func Parse(data []byte) (*Info, error) {
	if len(data) > maxSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than %d", ErrInvalid, len(data), maxSize)
	}
	ni := &Info{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4<<10), maxSize) // grows for long References lines
	var seenNarSize bool
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: no ':' in %q", ErrInvalid, n, line)
		}
		v = strings.TrimSpace(v)
		if err := setField(ni, k, v, &seenNarSize); err != nil {
			return nil, fmt.Errorf("%w: line %d: %s: %w", ErrInvalid, n, k, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if ni.Compression == "" {
		ni.Compression = "bzip2"
	}
	switch {
	case ni.StorePath == "":
		return nil, fmt.Errorf("%w: StorePath missing", ErrInvalid)
	case ni.URL == "":
		return nil, fmt.Errorf("%w: URL missing", ErrInvalid)
	case ni.NarHash == nil:
		return nil, fmt.Errorf("%w: NarHash missing", ErrInvalid)
	case !seenNarSize:
		return nil, fmt.Errorf("%w: NarSize missing", ErrInvalid)
	}
	if err := ni.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if HashOfStorePath(ni.StorePath) == "" {
		return nil, fmt.Errorf("%w: StorePath %q is not in %s", ErrInvalid, ni.StorePath, StoreDir)
	}
	return ni, nil
}

func setField(ni *Info, k, v string, seenNarSize *bool) error {
	var err error
	switch k {
	case "StorePath":
		ni.StorePath = v
	case "URL":
		ni.URL = v
	case "Compression":
		ni.Compression = v
	case "FileHash":
		ni.FileHash, err = nixhash.ParseAny(v, nil)
	case "FileSize":
		ni.FileSize, err = strconv.ParseUint(v, 10, 64)
	case "NarHash":
		ni.NarHash, err = nixhash.ParseAny(v, nil)
	case "NarSize":
		ni.NarSize, err = strconv.ParseUint(v, 10, 64)
		*seenNarSize = true
	case "References":
		ni.References = strings.Fields(v)
	case "Deriver":
		if v != "unknown-deriver" {
			ni.Deriver = v
		}
	case "System":
		ni.System = v
	case "Sig":
		var sig signature.Signature
		sig, err = signature.ParseSignature(v)
		if err == nil {
			ni.Signatures = append(ni.Signatures, sig)
		}
	case "CA":
		ni.CA = v
	}
	// Any other key is ignored, as Nix ignores it.
	return err
}
