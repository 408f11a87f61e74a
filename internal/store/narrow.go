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
	if bytes.HasPrefix(rest, []byte(`,"access":"`)) {
		if access, rest, ok = fastTime(rest, `,"access":"`); !ok {
			return false
		}
	}
	var fill refill
	if v, ok := bytes.CutPrefix(rest, []byte(`,"refill":`)); ok {
		if len(v) < 1 || v[0] < '1' || v[0] > '9' {
			return false
		}
		fill, rest = refill(v[0]-'0'), v[1:]
	}
	if !bytes.Equal(rest, []byte("}")) {
		return false
	}
	*r = narRow{Size: size, Stored: stored, Access: access, Refill: fill}
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
	t, ok := utcTime(rest[:i])
	if !ok {
		var err error
		if t, err = time.Parse(time.RFC3339Nano, unsafeString(rest[:i])); err != nil {
			return time.Time{}, nil, false
		}
	}
	return t, rest[i+1:], true
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
