package narinfo

import (
	"bytes"
	"strconv"
	"strings"
)

// Marshal renders ni in the order Nix writes narinfo files. FileHash and
// FileSize are written only when known, so a rewrite never invents them.
func Marshal(ni *Info) []byte {
	var b bytes.Buffer
	b.Grow(512 + 64*len(ni.References) + 128*len(ni.Signatures))
	line := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteByte('\n')
	}
	line("StorePath", ni.StorePath)
	line("URL", ni.URL)
	line("Compression", ni.Compression)
	if ni.FileHash != nil {
		line("FileHash", ni.FileHash.String())
	}
	if ni.FileSize != 0 {
		line("FileSize", strconv.FormatUint(ni.FileSize, 10))
	}
	line("NarHash", ni.NarHash.String())
	line("NarSize", strconv.FormatUint(ni.NarSize, 10))
	// Nix writes "References: " even with none, and its parser needs the
	// space: "References:" alone makes it read the next line as references.
	line("References", strings.Join(ni.References, " "))
	if ni.Deriver != "" {
		line("Deriver", ni.Deriver)
	}
	if ni.System != "" {
		line("System", ni.System)
	}
	for _, s := range ni.Signatures {
		line("Sig", s.String())
	}
	if ni.CA != "" {
		line("CA", ni.CA)
	}
	return b.Bytes()
}
