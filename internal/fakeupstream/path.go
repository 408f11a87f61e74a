package fakeupstream

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// Path describes a store path to publish. Only File is required.
type Path struct {
	// Hash is the store path's hash part; default random.
	Hash string
	// Name follows the hash in the store path; default "test".
	Name string
	// File is the NAR file served at the narinfo's URL, as stored (the
	// fake never compresses: Compression is only a label here).
	File []byte
	// NarHash and NarSize describe the uncompressed NAR; by default those
	// of File, which is right for Compression "none".
	NarHash []byte
	NarSize uint64
	// Compression is the narinfo's Compression. "" writes no Compression
	// line at all (which Nix reads as bzip2).
	Compression string
	// References are store path base names.
	References []string
	// URL is the narinfo's URL field; default "nar/<FileHash>.nar<ext>".
	// The file is served at the URL path it resolves to on this upstream.
	URL string
	// OmitFileHash and OmitFileSize leave those lines out, as attic does.
	OmitFileHash, OmitFileSize bool
	// SignWith signs with another key instead of the upstream's; Unsigned
	// writes no Sig line.
	SignWith *signature.SecretKey
	Unsigned bool
	// Extra lines (say unknown keys) are appended verbatim.
	Extra string
}

// Item is a published path: what a test needs to ask for it.
type Item struct {
	Hash      string
	StorePath string
	// NarInfo is the narinfo text the upstream serves.
	NarInfo []byte
	// NarInfoPath and NARPath are the URL paths on the upstream, for Count
	// and SetFault.
	NarInfoPath string
	NARPath     string
	// FileHash is the NAR file's sha256 in Nix base32: the proxy names the
	// file "<FileHash>.nar<ext>".
	FileHash string
	File     []byte
}

// extensions mirrors the file suffixes Nix gives each compression.
var extensions = map[string]string{
	"": ".bz2", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst", "br": ".br",
	"lzip": ".lzip", "lz4": ".lz4", "gzip": ".gz", "none": "",
}

// Add publishes p and returns how to ask for it.
func (u *Upstream) Add(p Path) *Item {
	u.t.Helper()
	if p.Hash == "" {
		p.Hash = RandomHash()
	}
	if p.Name == "" {
		p.Name = "test"
	}
	fileSum := sha256.Sum256(p.File)
	if p.NarHash == nil {
		p.NarHash, p.NarSize = fileSum[:], uint64(len(p.File))
	}
	it := &Item{
		Hash:        p.Hash,
		StorePath:   "/nix/store/" + p.Hash + "-" + p.Name,
		NarInfoPath: "/" + p.Hash + ".narinfo",
		FileHash:    nixbase32.EncodeToString(fileSum[:]),
		File:        p.File,
	}
	if p.URL == "" {
		p.URL = "nar/" + it.FileHash + ".nar" + extensions[p.Compression]
	}
	it.NARPath = u.resolve(p.URL)

	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, v) }
	line("StorePath", it.StorePath)
	line("URL", p.URL)
	if p.Compression != "" {
		line("Compression", p.Compression)
	}
	if !p.OmitFileHash {
		line("FileHash", "sha256:"+it.FileHash)
	}
	if !p.OmitFileSize {
		line("FileSize", strconv.Itoa(len(p.File)))
	}
	narHash := "sha256:" + nixbase32.EncodeToString(p.NarHash)
	line("NarHash", narHash)
	line("NarSize", strconv.FormatUint(p.NarSize, 10))
	line("References", strings.Join(p.References, " "))
	if !p.Unsigned {
		sk := u.secret
		if p.SignWith != nil {
			sk = *p.SignWith
		}
		sig, err := sk.Sign(rand.Reader, Fingerprint(it.StorePath, narHash, p.NarSize, p.References))
		if err != nil {
			u.t.Fatalf("fakeupstream: sign: %v", err)
		}
		line("Sig", sig.String())
	}
	b.WriteString(p.Extra)
	it.NarInfo = []byte(b.String())

	u.SetFile(it.NarInfoPath, it.NarInfo)
	if it.NARPath != "" {
		u.SetFile(it.NARPath, p.File)
	}
	return it
}

// resolve returns the URL path a narinfo URL field names on this upstream;
// URLs on other hosts resolve to "" (nothing is served for them here).
func (u *Upstream) resolve(ref string) string {
	if i := strings.Index(ref, "://"); i >= 0 {
		rest := ref[i+3:]
		host, path, _ := strings.Cut(rest, "/")
		if host != u.addr {
			return ""
		}
		ref = path
	}
	ref, _, _ = strings.Cut(ref, "?")
	return "/" + strings.TrimPrefix(ref, "/")
}

// Fingerprint is the text Nix signs, built independently of the code under
// test: 1;StorePath;NarHash;NarSize;sorted full reference paths.
func Fingerprint(storePath, narHash string, narSize uint64, refs []string) string {
	full := make([]string, len(refs))
	for i, r := range refs {
		full[i] = "/nix/store/" + r
	}
	slices.Sort(full)
	return "1;" + storePath + ";" + narHash + ";" + strconv.FormatUint(narSize, 10) + ";" + strings.Join(full, ",")
}

// NewKey returns a fresh key pair, for narinfos signed by someone else.
func NewKey(t testing.TB, name string) (signature.SecretKey, signature.PublicKey) {
	t.Helper()
	sk, pk, err := signature.GenerateKeypair(name, rand.Reader)
	if err != nil {
		t.Fatalf("fakeupstream: generate key: %v", err)
	}
	return sk, pk
}
