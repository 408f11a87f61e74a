package store

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// decodeNARRow reads a NAR row. Rows are JSON written by json.Marshal of a
// narRow, whose layout is fixed ({"size":N,"stored":"T"[,"access":"T"]});
// that layout is read here without encoding/json, which is most of the
// cost of counting 200,000 rows at Open or walking them for eviction.
// Anything else falls back to json.Unmarshal. It allocates nothing: the
// numbers and times are parsed in place (their errors, which would keep
// the row's memory, are dropped).
func decodeNARRow(v []byte, r *narRow) error {
	if fastNARRow(v, r) {
		return nil
	}
	*r = narRow{}
	return json.Unmarshal(v, r)
}

func fastNARRow(v []byte, r *narRow) bool {
	rest, ok := bytes.CutPrefix(v, []byte(`{"size":`))
	if !ok {
		return false
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return false
	}
	size, err := strconv.ParseInt(unsafeString(rest[:i]), 10, 64)
	if err != nil {
		return false
	}
	rest = rest[i:]
	stored, rest, ok := fastTime(rest, `,"stored":"`)
	if !ok {
		return false
	}
	var access time.Time
	if !bytes.Equal(rest, []byte("}")) {
		if access, rest, ok = fastTime(rest, `,"access":"`); !ok || !bytes.Equal(rest, []byte("}")) {
			return false
		}
	}
	*r = narRow{Size: size, Stored: stored, Access: access}
	return true
}

// fastTime reads key (`,"name":"`), an RFC 3339 time and its closing quote.
func fastTime(v []byte, key string) (time.Time, []byte, bool) {
	rest, ok := bytes.CutPrefix(v, []byte(key))
	if !ok {
		return time.Time{}, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return time.Time{}, nil, false
	}
	t, err := time.Parse(time.RFC3339Nano, unsafeString(rest[:i]))
	if err != nil {
		return time.Time{}, nil, false
	}
	return t, rest[i+1:], true
}
