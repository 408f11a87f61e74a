package upstream

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
)

// Netrc holds credentials parsed from a netrc file, the format of Nix's
// netrc-file setting. The zero value has no entries.
type Netrc struct {
	machines []netrcEntry
	def      *netrcEntry
}

type netrcEntry struct {
	host     string
	isDef    bool // the "default" entry; host is then empty
	login    string
	password string
}

// LoadNetrc reads and parses the netrc file at path. A missing file is an
// error wrapping the os error (errors.Is(err, fs.ErrNotExist)).
func LoadNetrc(path string) (*Netrc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("upstream: netrc: %w", err)
	}
	defer f.Close()
	n, err := ParseNetrc(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// Credentials returns the login and password for host, a host name with or
// without port (the port is ignored, as curl does). The "machine" entry
// whose name equals host case-insensitively wins, the first one if several
// do; otherwise the "default" entry; ok is false when neither exists. The
// login may be empty: cachix takes its token as the password alone.
func (n *Netrc) Credentials(host string) (login, password string, ok bool) {
	if n == nil {
		return "", "", false
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	for _, e := range n.machines {
		if strings.EqualFold(e.host, host) {
			return e.login, e.password, true
		}
	}
	if n.def != nil {
		return n.def.login, n.def.password, true
	}
	return "", "", false
}

// ParseNetrc parses netrc text: "machine HOST", "default", then "login",
// "password" and "account" with their values, in any whitespace layout.
// "macdef" bodies (up to the next blank line) and "#" comments are
// skipped, and double-quoted values may hold spaces, as curl allows.
// Unknown words are ignored, like curl does, so a file Nix accepts is
// accepted here.
func ParseNetrc(r io.Reader) (*Netrc, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("upstream: netrc: %w", err)
	}
	n := &Netrc{}
	lx := &netrcLexer{s: string(data), line: 1}
	var cur *netrcEntry // nil until the first machine or default
	finish := func() {
		switch {
		case cur == nil:
		case cur.isDef:
			if n.def == nil {
				n.def = cur
			}
		default:
			n.machines = append(n.machines, *cur)
		}
	}
	for {
		tok, ok, err := lx.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch tok {
		case "machine", "default":
			finish()
			// `machine ""` names no host: it must not become the
			// default, whose credentials go to every host.
			cur = &netrcEntry{isDef: tok == "default"}
			if tok == "machine" {
				if cur.host, err = lx.value(tok); err != nil {
					return nil, err
				}
			}
		case "login", "password", "account":
			v, err := lx.value(tok)
			if err != nil {
				return nil, err
			}
			if cur == nil {
				return nil, fmt.Errorf("upstream: netrc: line %d: %q before any machine", lx.line, tok)
			}
			switch tok {
			case "login":
				cur.login = v
			case "password":
				cur.password = v
			}
		case "macdef":
			if _, err := lx.value(tok); err != nil {
				return nil, err
			}
			lx.skipMacro()
		}
	}
	finish()
	return n, nil
}
