package upstream

import (
	"fmt"
	"strings"
)

// netrcLexer splits netrc text into tokens. It is line-aware only where the
// format is: comments end at a newline, macdef bodies at a blank line.
type netrcLexer struct {
	s       string
	pos     int
	line    int // 1-based line of the last token, for messages; start at 1
	counted int // s[:counted] has been counted into line
}

func isSpace(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'
}

// next returns the next token; ok is false at the end of input.
func (l *netrcLexer) next() (tok string, ok bool, err error) {
	for l.pos < len(l.s) {
		switch b := l.s[l.pos]; {
		case isSpace(b):
			l.pos++
		case b == '#':
			if i := strings.IndexByte(l.s[l.pos:], '\n'); i >= 0 {
				l.pos += i
			} else {
				l.pos = len(l.s)
			}
		default:
			// Count only what is new since the last token: counting from
			// the start each time is quadratic in the file's size.
			l.line += strings.Count(l.s[l.counted:l.pos], "\n")
			l.counted = l.pos
			if b == '"' {
				tok, err = l.quoted()
				return tok, err == nil, err
			}
			start := l.pos
			for l.pos < len(l.s) && !isSpace(l.s[l.pos]) {
				l.pos++
			}
			return l.s[start:l.pos], true, nil
		}
	}
	return "", false, nil
}

// quoted reads a double-quoted token with backslash escapes.
func (l *netrcLexer) quoted() (string, error) {
	var b strings.Builder
	for l.pos++; l.pos < len(l.s); l.pos++ {
		switch c := l.s[l.pos]; c {
		case '"':
			l.pos++
			return b.String(), nil
		case '\\':
			if l.pos+1 == len(l.s) {
				continue // the loop ends: unterminated
			}
			l.pos++
			switch e := l.s[l.pos]; e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			default:
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("upstream: netrc: line %d: unterminated quoted string", l.line)
}

// value returns the token that must follow keyword.
func (l *netrcLexer) value(keyword string) (string, error) {
	line := l.line
	v, ok, err := l.next()
	if err != nil {
		return "", err
	}
	if !ok {
		return "", fmt.Errorf("upstream: netrc: line %d: %q needs a value", line, keyword)
	}
	return v, nil
}

// skipMacro skips a macdef body: the rest of the macdef line, then every
// line up to and including the first empty one (CRLF files included).
func (l *netrcLexer) skipMacro() {
	first := true
	for l.pos < len(l.s) {
		end := strings.IndexByte(l.s[l.pos:], '\n')
		if end < 0 {
			l.pos = len(l.s)
			return
		}
		line := l.s[l.pos : l.pos+end]
		l.pos += end + 1
		if !first && strings.TrimRight(line, "\r") == "" {
			return
		}
		first = false
	}
}
