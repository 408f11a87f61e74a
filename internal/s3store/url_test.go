package s3store

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in   string
		want Location
		err  bool
	}{
		{in: "s3://cache", want: Location{Bucket: "cache", Scheme: "https", Region: "us-east-1"}},
		{in: "s3://cache/fleet/a/?endpoint=127.0.0.1:7070&scheme=http&region=eu-west-1",
			want: Location{Bucket: "cache", Prefix: "fleet/a", Endpoint: "127.0.0.1:7070", Scheme: "http", Region: "eu-west-1"}},
		{in: "s3://cache?profile=ci", want: Location{Bucket: "cache", Scheme: "https", Region: "us-east-1", Profile: "ci"}},
		{in: "/var/cache/x", err: true},
		{in: "s3:///prefix", err: true},
		{in: "s3://cache?scheme=ftp", err: true},
		{in: "s3://cache?endpiont=x", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseURL(tt.in)
			if tt.err {
				if !errors.Is(err, ErrURL) {
					t.Fatalf("ParseURL(%q) = %+v, %v; want ErrURL", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("ParseURL(%q) (-want +got):\n%s", tt.in, d)
			}
			again, err := ParseURL(got.String())
			if err != nil || again != got {
				t.Errorf("round trip through %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}
