package upstream

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseNetrc(t *testing.T) {
	type cred struct {
		host, login, password string
		ok                    bool
	}
	tests := []struct {
		name  string
		text  string
		creds []cred
	}{
		{"multi-line", "machine cache.example.org\n  login alice\n  password s3cret\n",
			[]cred{{"cache.example.org", "alice", "s3cret", true}, {"other.org", "", "", false}}},
		{"single line, several machines", "machine a.org login la password pa machine b.org login lb password pb",
			[]cred{{"a.org", "la", "pa", true}, {"b.org", "lb", "pb", true}}},
		{"host case and port", "machine Cache.Example.ORG login u password p",
			[]cred{{"cache.example.org", "u", "p", true}, {"cache.example.org:8443", "u", "p", true}}},
		{"missing login (cachix token)", "machine mycache.cachix.org password eyJhbGciOi",
			[]cred{{"mycache.cachix.org", "", "eyJhbGciOi", true}}},
		{"default", "machine a.org login la password pa\ndefault login anon password guest\n",
			[]cred{{"a.org", "la", "pa", true}, {"z.org", "anon", "guest", true}}},
		{"first match wins", "machine a.org password one\nmachine a.org password two\n",
			[]cred{{"a.org", "", "one", true}}},
		{"macdef skipped", "machine a.org login la\nmacdef init\nmachine evil.org password x\nlogin y\n\npassword pa\n",
			[]cred{{"a.org", "la", "pa", true}, {"evil.org", "", "", false}}},
		{"macdef with CRLF", "macdef init\r\nmachine evil.org password x\r\n\r\nmachine a.org password pa\r\n",
			[]cred{{"a.org", "", "pa", true}, {"evil.org", "", "", false}}},
		{"comments and account", "# creds\nmachine a.org login la account acct password pa # trailing\n",
			[]cred{{"a.org", "la", "pa", true}}},
		{"quoted password", `machine a.org login la password "with space \"q\""`,
			[]cred{{"a.org", "la", `with space "q"`, true}}},
		{"tabs and blank lines", "\n\tmachine\ta.org\n\n\tlogin\tla\n\tpassword\tpa\n",
			[]cred{{"a.org", "la", "pa", true}}},
		{"empty", "", []cred{{"a.org", "", "", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseNetrc(strings.NewReader(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.creds {
				l, p, ok := n.Credentials(w.host)
				if l != w.login || p != w.password || ok != w.ok {
					t.Errorf("Credentials(%q) = %q, %q, %v; want %q, %q, %v", w.host, l, p, ok, w.login, w.password, w.ok)
				}
			}
		})
	}
}

func TestParseNetrcErrors(t *testing.T) {
	for _, text := range []string{
		"machine",
		"machine a.org login",
		"login alice password p",
		`machine a.org password "unterminated`,
	} {
		if _, err := ParseNetrc(strings.NewReader(text)); err == nil {
			t.Errorf("ParseNetrc(%q) succeeded, want error", text)
		}
	}
}

func TestLoadNetrc(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadNetrc(filepath.Join(dir, "missing")); !errorsIsNotExist(err) {
		t.Errorf("LoadNetrc(missing) = %v, want fs.ErrNotExist", err)
	}
	path := filepath.Join(dir, "netrc")
	if err := os.WriteFile(path, []byte("machine h login u password p\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := LoadNetrc(path)
	if err != nil {
		t.Fatal(err)
	}
	if l, p, ok := n.Credentials("h"); l != "u" || p != "p" || !ok {
		t.Errorf("Credentials = %q, %q, %v", l, p, ok)
	}
	var nilNetrc *Netrc
	if _, _, ok := nilNetrc.Credentials("h"); ok {
		t.Error("nil Netrc has credentials")
	}
}

func errorsIsNotExist(err error) bool { return err != nil && errors.Is(err, fs.ErrNotExist) }
