// Package narinfo holds the Nix binary-cache formats this proxy speaks: the
// names a client may ask for, the narinfo text itself, and the policy applied
// to it (signature checks, the NAR name we hand out).
package narinfo

import (
	"strings"

	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// HashPattern matches a store path's hash part: 32 characters of Nix base32.
// It is meant for route patterns; ValidHash is the check handlers rely on.
const HashPattern = `[0-9a-df-np-sv-z]{32}`

// narExtensions are the file suffixes a NAR may carry after ".nar", keyed by
// the Compression value whose files Nix names that way. Nix's writer uses
// .xz/.bz2/.zst/.lzip/.lz4/.br; the rest occur on other caches.
var narExtensions = map[string]string{
	"none":  "",
	"xz":    ".xz",
	"bzip2": ".bz2",
	"zstd":  ".zst",
	"lzip":  ".lzip",
	"lz4":   ".lz4",
	"br":    ".br",
	"lzma":  ".lzma",
	"gzip":  ".gz",
}

// ValidHash reports whether s is a store path hash part.
func ValidHash(s string) bool {
	return len(s) == 32 && isNixBase32(s)
}

// ValidNARName reports whether name is a NAR file name this proxy serves:
// 52 characters of Nix base32 (a sha256 digest), ".nar", and an optional
// compression suffix.
func ValidNARName(name string) bool {
	if len(name) < 56 || !isNixBase32(name[:52]) || name[52:56] != ".nar" {
		return false
	}
	switch name[56:] {
	case "", ".xz", ".bz2", ".zst", ".lzip", ".lz4", ".br", ".lzma", ".gz":
		return true
	}
	return false
}

// NARExtension returns the file suffix for a narinfo Compression value
// ("" for none or a method no cache names a suffix for).
func NARExtension(compression string) string {
	return narExtensions[compression]
}

func isNixBase32(s string) bool {
	for i := 0; i < len(s); i++ {
		if !nixbase32.Is(s[i]) {
			return false
		}
	}
	return true
}

// HashOfStorePath returns the hash part of a store path or a store path base
// name, or "" when s is neither.
func HashOfStorePath(s string) string {
	s = strings.TrimPrefix(s, StoreDir+"/")
	if len(s) < 33 || s[32] != '-' || !ValidHash(s[:32]) {
		return ""
	}
	return s[:32]
}

// StoreDir is the only store directory this proxy serves.
const StoreDir = "/nix/store"

// ValidStorePathName reports whether s is a store path base name,
// "<hash>-<name>", with the characters Nix allows in a name.
func ValidStorePathName(s string) bool {
	if len(s) < 34 || len(s) > 32+1+211 || s[32] != '-' || !ValidHash(s[:32]) {
		return false
	}
	for i := 33; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("+-._?=", c) >= 0:
		default:
			return false
		}
	}
	return s[33] != '.'
}
