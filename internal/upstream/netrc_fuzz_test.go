package upstream

import (
	"fmt"
	"net"
	"strings"
	"testing"
)

// FuzzParseNetrc checks ParseNetrc never panics, fails with its own
// error, and that what it accepts survives writing it back out (every value
// quoted) and parsing it again: the same machines, the same default.
func FuzzParseNetrc(f *testing.F) {
	for _, s := range []string{
		"machine cache.example.org\n  login alice\n  password s3cret\n",
		"machine a.org login la password pa machine b.org login lb password pb",
		"machine a.org login la\nmacdef init\nmachine evil.org password x\n\npassword pa\n",
		"macdef init\r\nmachine evil.org password x\r\n\r\nmachine a.org password pa\r\n",
		"# c\nmachine a.org login la account acct password pa # trailing\ndefault login anon password guest\n",
		`machine a.org login la password "with space \"q\" \\ \n"`,
		`machine "" password leaked`,
		"machine", `machine a.org password "unterminated`, "login alice",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		n, err := ParseNetrc(strings.NewReader(text))
		if err != nil {
			if n != nil || !strings.HasPrefix(err.Error(), "upstream: netrc: ") {
				t.Fatalf("error %q with result %v", err, n)
			}
			return
		}
		for _, m := range n.machines {
			if m.isDef {
				t.Fatalf("a machine entry is marked default: %+v", m)
			}
			// A host name (no port or brackets to strip) finds its entry,
			// with or without a port.
			if strings.ContainsAny(m.host, ":[]") {
				continue
			}
			if _, _, ok := n.Credentials(net.JoinHostPort(m.host, "443")); !ok {
				t.Errorf("no credentials for machine %q", m.host)
			}
		}
		if n.def != nil && !n.def.isDef {
			t.Fatalf("the default entry is a machine: %+v", n.def)
		}
		out := formatNetrc(n)
		again, err := ParseNetrc(strings.NewReader(out))
		if err != nil {
			t.Fatalf("reparse of\n%s\nfailed: %v", out, err)
		}
		if got := formatNetrc(again); got != out {
			t.Fatalf("not stable through a round trip:\n%s\nthen\n%s", out, got)
		}
	})
}

// formatNetrc writes n back as netrc text, every value quoted.
func formatNetrc(n *Netrc) string {
	var b strings.Builder
	for _, m := range n.machines {
		fmt.Fprintf(&b, "machine %s login %s password %s\n", quoteNetrc(m.host), quoteNetrc(m.login), quoteNetrc(m.password))
	}
	if n.def != nil {
		fmt.Fprintf(&b, "default login %s password %s\n", quoteNetrc(n.def.login), quoteNetrc(n.def.password))
	}
	return b.String()
}

func quoteNetrc(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// TestNetrcEmptyMachineIsNotDefault: `machine ""` names no host, and its
// credentials must not become the default sent to every host.
func TestNetrcEmptyMachineIsNotDefault(t *testing.T) {
	n, err := ParseNetrc(strings.NewReader("machine \"\" login l password leaked\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l, p, ok := n.Credentials("cache.example.org"); ok {
		t.Errorf("Credentials(cache.example.org) = %q, %q from an empty machine name", l, p)
	}
}

// TestNetrcErrorLines checks error messages name the right line, counted
// as the lexer goes.
func TestNetrcErrorLines(t *testing.T) {
	tests := []struct{ text, want string }{
		{"machine a.org\n\n\nlogin", "line 4"},
		{"# one\n# two\nlogin x", "line 3"},
		{"machine a.org password \"multi\nline\"\nlogin l\n\nmachine b\npassword \"open\n", "line 6"},
		{"machine", "line 1"},
	}
	for _, tt := range tests {
		_, err := ParseNetrc(strings.NewReader(tt.text))
		if err == nil || !strings.Contains(err.Error(), tt.want+":") {
			t.Errorf("ParseNetrc(%q) = %v, want an error at %s", tt.text, err, tt.want)
		}
	}
}
