package main

import (
	"flag"
	"fmt"
	"reflect"
	"regexp"
	"time"
)

// A bad value must say what was expected, wherever it came from: the flag
// package's own errors say only "parse error" ("--negative-ttl 5").
// explainValues wraps the flag package's values so they do, and
// flagSyntaxError rewords its command-line message to name the flag as
// the user wrote it; the environment and the config file name their
// variable and key themselves.

// explainValues makes every duration, number and bool flag of fs that the
// flag package defined say what it wants when given a bad value, until
// the returned func puts the flag package's values back (its -h output
// names their types from them). Values of our own (sizes, lists) say what
// they want themselves.
func explainValues(fs *flag.FlagSet) (restore func()) {
	orig := map[*flag.Flag]flag.Value{}
	fs.VisitAll(func(f *flag.Flag) {
		g, ok := f.Value.(flag.Getter)
		if !ok || !fromFlagPackage(f.Value) {
			return
		}
		orig[f] = f.Value
		switch g.Get().(type) {
		case time.Duration:
			f.Value = explained{g, "a duration like 30s, 5m or 1h"}
		case int, int64:
			f.Value = explained{g, "a whole number"}
		case uint, uint64:
			f.Value = explained{g, "a whole number, 0 or more"}
		case float64:
			f.Value = explained{g, "a number"}
		case bool:
			f.Value = explainedBool{explained{g, "true or false"}}
		}
	})
	return func() {
		for f, v := range orig {
			f.Value = v
		}
	}
}

func fromFlagPackage(v flag.Value) bool {
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t.PkgPath() == "flag"
}

// explained is a flag value whose Set error says what it wants.
type explained struct {
	flag.Getter
	want string
}

func (e explained) Set(s string) error {
	if err := e.Getter.Set(s); err != nil {
		return fmt.Errorf("want %s, got %q", e.want, s)
	}
	return nil
}

// explainedBool keeps a bool flag usable bare (--verify-signatures).
type explainedBool struct{ explained }

func (explainedBool) IsBoolFlag() bool { return true }

// The flag package's messages for the command line (stable since Go 1.0).
var (
	flagValueError    = regexp.MustCompile(`^invalid (?:boolean )?value ".*" for (?:flag )?-([^:]+): (.*)$`)
	flagUnknown       = regexp.MustCompile(`^flag provided but not defined: -+(.*)$`)
	flagNeedsArgument = regexp.MustCompile(`^flag needs an argument: -+(.*)$`)
)

// flagSyntaxError rewords the flag package's errors to name the flag as
// the user writes it: `invalid value "5" for flag -negative-ttl: want ...`
// becomes `--negative-ttl: want ...`. Other errors pass as they are.
func flagSyntaxError(err error) error {
	if m := flagValueError.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("--%s: %s", m[1], m[2])
	}
	if m := flagUnknown.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("unknown flag --%s", m[1])
	}
	if m := flagNeedsArgument.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("--%s: needs a value", m[1])
	}
	return err
}
