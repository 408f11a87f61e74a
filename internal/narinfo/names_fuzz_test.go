package narinfo

import (
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzNames checks the name checks the server relies on before it builds
// a file path: whatever ValidHash, ValidNARName or ValidStorePathName
// accepts, and whatever HashOfStorePath returns, is one plain path element
// that cannot leave the directory it is joined to.
func FuzzNames(f *testing.F) {
	for _, s := range []string{
		"7h7qgvs4kgzsn8a6rb273saxyqh4jxlz",
		"0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar.xz",
		"0a1mnkg1cmhd6rh7nlv5yb8m3b1ajb9y6w4q0vcdrqgfdx7kh2b4.nar",
		"7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1",
		"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.1",
		"7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-..",
		"7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-../x",
		"..", ".", "", "/", "\\", "..%2f", "nar/..", "a\x00b", "\xc0\xae\xc0\xae",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			what string
			ok   bool
			name string
		}{
			{"ValidHash", ValidHash(s), s},
			{"ValidNARName", ValidNARName(s), s},
			{"ValidStorePathName", ValidStorePathName(s), s},
			{"HashOfStorePath", HashOfStorePath(s) != "", HashOfStorePath(s)},
		} {
			if c.ok && !plainElement(c.name) {
				t.Errorf("%s accepts %q, which is not one plain path element", c.what, c.name)
			}
		}
		if h := HashOfStorePath(s); h != "" && !ValidHash(h) {
			t.Errorf("HashOfStorePath(%q) = %q, not a valid hash", s, h)
		}
	})
}

// plainElement reports whether s, joined to a directory, names an entry
// of that directory: no separator, no dot segment, no NUL, valid UTF-8,
// printable ASCII only.
func plainElement(s string) bool {
	if s == "" || s == "." || s == ".." || !utf8.ValidString(s) || strings.ContainsAny(s, "/\\\x00:") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return false
		}
	}
	return filepath.IsLocal(s) && filepath.Base(s) == s && filepath.Clean(s) == s
}
