package store

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
)

// decodeNARRow reads a NAR row. Rows are JSON written by json.Marshal of a
// narRow, whose layout is fixed
// ({"size":N,"stored":"T"[,"access":"T"][,"refill":R]});
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
	f, ok := splitNARRow(v)
	if !ok {
		return false
	}
	stored, ok := parseTime(f.stored)
	if !ok {
		return false
	}
	var access time.Time
	if f.access != nil {
		if access, ok = parseTime(f.access); !ok {
			return false
		}
	}
	*r = narRow{Size: f.size, Stored: stored, Access: access, Refill: f.refill}
	return true
}

// narFields are a NAR row's fields, the times not parsed yet (views of
// the row; access is nil when the row has none).
type narFields struct {
	size           int64
	stored, access []byte
	refill         refill
}

// splitNARRow cuts a row laid out as json.Marshal writes a narRow into
// its fields; ok is false for any other layout.
func splitNARRow(v []byte) (f narFields, ok bool) {
	rest, ok := bytes.CutPrefix(v, []byte(`{"size":`))
	if !ok {
		return f, false
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return f, false
	}
	size, err := strconv.ParseInt(unsafeString(rest[:i]), 10, 64)
	if err != nil {
		return f, false
	}
	f.size = size
	if f.stored, rest, ok = cutString(rest[i:], `,"stored":"`); !ok {
		return f, false
	}
	if bytes.HasPrefix(rest, []byte(`,"access":"`)) {
		if f.access, rest, ok = cutString(rest, `,"access":"`); !ok {
			return f, false
		}
	}
	if v, ok := bytes.CutPrefix(rest, []byte(`,"refill":`)); ok {
		if len(v) < 1 || v[0] < '1' || v[0] > '9' {
			return f, false
		}
		f.refill, rest = refill(v[0]-'0'), v[1:]
	}
	return f, bytes.Equal(rest, []byte("}"))
}

// cutString cuts key (`,"name":"`) and a string value up to its closing
// quote off v.
func cutString(v []byte, key string) (value, rest []byte, ok bool) {
	rest, ok = bytes.CutPrefix(v, []byte(key))
	if !ok {
		return nil, nil, false
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return nil, nil, false
	}
	return rest[:i], rest[i+1:], true
}

// parseTime reads an RFC 3339 time, UTC ones the fast way.
func parseTime(b []byte) (time.Time, bool) {
	if t, ok := utcTime(b); ok {
		return t, true
	}
	t, err := time.Parse(time.RFC3339Nano, unsafeString(b))
	return t, err == nil
}

// utcTime reads a time as json.Marshal writes a UTC one,
// 2006-01-02T15:04:05[.999999999]Z, five times faster than time.Parse (a
// pass reads 200,000). It reports false for anything else (an offset, a
// day past the month's end), which time.Parse then reads or refuses.
func utcTime(b []byte) (time.Time, bool) {
	if len(b) < 20 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' || b[len(b)-1] != 'Z' {
		return time.Time{}, false
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || !ok6 {
		return time.Time{}, false
	}
	ns := 0
	if frac := b[19 : len(b)-1]; len(frac) > 0 {
		n, ok := digits(frac[1:])
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 || !ok {
			return time.Time{}, false
		}
		for range 10 - len(frac) {
			n *= 10
		}
		ns = n
	}
	if month < 1 || month > 12 || day < 1 || day > daysIn(month, year) || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, ns, time.UTC), true
}

// digits reads b as a decimal number of ASCII digits only.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, len(b) > 0
}

func daysIn(month, year int) int {
	if month == 2 && year%4 == 0 && (year%100 != 0 || year%400 == 0) {
		return 29
	}
	return [...]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[month-1]
}
