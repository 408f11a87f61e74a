package server_test

import (
	"net/http"
	"testing"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/fakeupstream"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
)

// TestSignsOnlyWhatItChecked: the proxy's signature goes on a narinfo it
// pulled with a trusted signature and on one uploaded to it, never on one
// it kept unchecked (--verify-signatures=false): a client trusting only
// the proxy's key would take whatever the upstream sent.
func TestSignsOnlyWhatItChecked(t *testing.T) {
	tests := []struct {
		name       string
		untrusted  bool // the upstream's key is not among the trusted
		skipVerify bool
		upload     bool // uploaded unsigned instead of pulled
		wantSigned bool
	}{
		{name: "pulled, verified", wantSigned: true},
		{name: "pulled unverified", untrusted: true, skipVerify: true, wantSigned: false},
		{name: "pulled with verification off, trusted signature", skipVerify: true, wantSigned: true},
		{name: "uploaded", upload: true, wantSigned: true},
		{name: "uploaded, verification off", upload: true, skipVerify: true, wantSigned: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newUploadEnv(t, func(c *config) {
				c.skipVerify = tt.skipVerify
				if tt.untrusted {
					c.keys = []narinfo.PublicKey{}
				}
			})
			var it *fakeupstream.Item
			if tt.upload {
				it = e.builder.Add(fakeupstream.Path{File: []byte("uploaded"), Compression: "none", Unsigned: true})
				wantStatus(t, "PUT NAR", e.pushNAR(it), http.StatusCreated)
				wantStatus(t, "PUT narinfo", e.pushNarInfo(it), http.StatusCreated)
			} else {
				it = e.up.Add(fakeupstream.Path{File: []byte("pulled"), Compression: "none"})
			}
			r := e.get(it.NarInfoPath)
			wantStatus(t, "GET narinfo", r, http.StatusOK)
			ni, err := narinfo.Parse(r.body)
			if err != nil {
				t.Fatal(err)
			}
			if got := narinfo.SignedBy(ni, e.pub); got != tt.wantSigned {
				t.Errorf("signed by the proxy: %v, want %v\n%s", got, tt.wantSigned, r.body)
			}
			if !tt.upload && !narinfo.SignedBy(ni, e.up.PublicKey()) {
				t.Errorf("the upstream's signature is gone:\n%s", r.body)
			}
		})
	}
}
