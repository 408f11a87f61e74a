package main

import (
	"fmt"
	"strings"
	"time"
)

// fileValue is a value of the config file: given or not, and its typed
// value.
type fileValue interface {
	given() bool
	typed() any
	// kind is what the docs say the key takes.
	kind() string
}

// opt is a key of the config file of type T: string, int, bool, []string,
// time.Duration (a string with its unit) or byteSize (likewise). It checks
// the TOML value's type itself, so a wrong one is refused saying what it
// wants, as the flag and the environment variable do.
type opt[T any] struct {
	v   T
	set bool
}

var _ fileValue = (*opt[int])(nil)

func (o *opt[T]) given() bool { return o.set }
func (o *opt[T]) typed() any  { return o.v }

func (o *opt[T]) kind() string {
	switch any(o.v).(type) {
	case string:
		return "string"
	case int:
		return "integer"
	case bool:
		return "boolean"
	case []string:
		return "list of strings"
	case time.Duration:
		return "duration"
	case byteSize:
		return "size"
	}
	panic(fmt.Sprintf("opt of %T", o.v))
}

// UnmarshalTOML implements toml.Unmarshaler.
func (o *opt[T]) UnmarshalTOML(data any) error {
	var err error
	switch p := any(&o.v).(type) {
	case *string:
		s, ok := data.(string)
		if !ok {
			return fmt.Errorf("want a string, got %s", tomlText(data))
		}
		*p = s
	case *int:
		n, ok := data.(int64)
		if !ok || int64(int(n)) != n {
			return fmt.Errorf("want a whole number, got %s", tomlText(data))
		}
		*p = int(n)
	case *bool:
		b, ok := data.(bool)
		if !ok {
			return fmt.Errorf("want true or false, got %s", tomlText(data))
		}
		*p = b
	case *[]string:
		*p, err = stringsOf(data)
	case *time.Duration:
		*p, err = durationOf(data)
	case *byteSize:
		*p, err = sizeOf(data)
	}
	if err != nil {
		return err
	}
	o.set = true
	return nil
}

func stringsOf(data any) ([]string, error) {
	list, ok := data.([]any)
	if !ok {
		return nil, fmt.Errorf(`want a list like ["a", "b"], got %s`, tomlText(data))
	}
	out := make([]string, len(list))
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("want a list of strings, got %s in it", tomlText(e))
		}
		out[i] = s
	}
	return out, nil
}

// durationOf reads a duration: a string with its unit, or 0.
func durationOf(data any) (time.Duration, error) {
	switch v := data.(type) {
	case string:
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("want a duration like 30s, 5m or 1h, got %q", v)
		}
		return d, nil
	case int64:
		if v == 0 {
			return 0, nil
		}
	}
	return 0, fmt.Errorf("want a duration like 30s, 5m or 1h, got %s", tomlText(data))
}

// byteSize is a size in bytes, given with its unit: "200GiB", or 0.
type byteSize int64

func sizeOf(data any) (byteSize, error) {
	switch v := data.(type) {
	case string:
		n, err := parseSize(v)
		return byteSize(n), err
	case int64:
		// A bare number says "did you mean 200GiB?", as a flag does.
		n, err := parseSize(fmt.Sprint(v))
		return byteSize(n), err
	}
	return 0, fmt.Errorf("want a size like 10GiB or 500MB, got %s", tomlText(data))
}

// tomlText writes a decoded TOML value back as the file had it, roughly,
// for messages: "5", `"first"`, [1, 2].
func tomlText(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []any:
		s := "["
		for i, e := range v {
			if i > 0 {
				s += ", "
			}
			s += tomlText(e)
		}
		return s + "]"
	case map[string]any:
		return "a table"
	}
	return fmt.Sprint(v)
}

// formatDuration writes d as a flag takes it, without the zero units
// time.Duration's String adds: "1h", "1m30s", "0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
