package upload

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/cache"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/narinfo"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
	"github.com/nix-community/go-nix/pkg/nixbase32"
)

// PutNarInfo receives the narinfo for hash, the last thing Nix uploads for
// a path. It is kept only when its NAR is on disk and matches it, every
// reference can be served, and it is signed by a trusted key or the proxy
// can sign it. A path already present is left as it is (exists true).
func (r *Receiver) PutNarInfo(ctx context.Context, hash string, body []byte) (exists bool, err error) {
	defer func() { r.observe("narinfo", exists, err, int64(len(body))) }()
	ni, err := narinfo.Parse(body)
	if err != nil {
		return false, rejected("%v", err)
	}
	if got := narinfo.HashOfStorePath(ni.StorePath); got != hash {
		return false, rejected("StorePath %s does not belong to %s.narinfo", ni.StorePath, hash)
	}
	name, ok := strings.CutPrefix(ni.URL, "nar/")
	if !ok || !narinfo.ValidNARName(name) {
		return false, rejected("URL %q is not nar/<sha256 nix32>.nar[.ext]", ni.URL)
	}
	unlock := r.lock(hash + ".narinfo")
	defer unlock()
	if _, err := r.opts.Store.NarInfo(ctx, hash); err == nil {
		return true, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return false, err
	}
	if err := r.checkNAR(ctx, ni, name); err != nil {
		return false, err
	}
	if err := r.checkReferences(ctx, ni, hash); err != nil {
		return false, err
	}
	if err := r.checkSignature(ni); err != nil {
		return false, err
	}
	if r.opts.SecretKey != nil {
		if err := narinfo.Sign(ni, *r.opts.SecretKey); err != nil {
			return false, err
		}
	}
	src := store.NARSource{Hash: hash, StorePath: ni.StorePath, Upstream: store.UploadedUpstream,
		Size: int64(ni.FileSize), SHA256: sha256Of(ni.FileHash), NarHash: sha256Of(ni.NarHash),
		NarSize: int64(ni.NarSize), Compression: ni.Compression}
	if err := r.opts.Store.ClaimUpload(ctx, hash, narinfo.Marshal(ni), name, src); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, rejected("NAR %s was dropped while its narinfo was checked; upload it again", name)
		}
		return false, err
	}
	r.opts.Paths.Stored(hash) // a "not found" remembered before the upload, a miss logged
	r.log.Info("upload narinfo", "store_path", ni.StorePath, "nar", name)
	return false, nil
}

// checkNAR: the NAR the narinfo names is on disk and is what it says.
func (r *Receiver) checkNAR(ctx context.Context, ni *narinfo.Info, name string) error {
	if compressionOf(name) != ni.Compression {
		return rejected("URL %s does not fit Compression %q", ni.URL, ni.Compression)
	}
	digest, _ := digestOf(name)
	if fh := sha256Of(ni.FileHash); !equalDigest(fh, digest) {
		return rejected("FileHash %v is not the sha256 in URL %s", ni.FileHash, ni.URL)
	}
	ok, err := r.opts.Store.HasNAR(ctx, name)
	if err != nil {
		return err
	}
	if !ok {
		return rejected("NAR %s has not been uploaded (upload the NAR before its narinfo)", ni.URL)
	}
	m, err := r.measured(ctx, name)
	if err != nil {
		return err
	}
	switch {
	case ni.FileSize != 0 && int64(ni.FileSize) != m.FileSize:
		return rejected("FileSize %d, but the uploaded NAR file has %d bytes", ni.FileSize, m.FileSize)
	case int64(ni.NarSize) != m.NarSize:
		return rejected("NarSize %d, but the uploaded NAR has %d bytes", ni.NarSize, m.NarSize)
	case !equalDigest(sha256Of(ni.NarHash), m.NarHash):
		return rejected("NarHash %v does not match the uploaded NAR (sha256:%s)", ni.NarHash, nixbase32.EncodeToString(m.NarHash))
	}
	return nil
}

// checkReferences: every reference but the path itself can be served, from
// the store or pulled through from an upstream. Nix fails outright on a
// narinfo whose reference is missing.
func (r *Receiver) checkReferences(ctx context.Context, ni *narinfo.Info, hash string) error {
	for _, ref := range ni.References {
		h := narinfo.HashOfStorePath(ref)
		if h == "" {
			return rejected("reference %q is not a store path", ref)
		}
		if h == hash {
			continue
		}
		_, err := r.opts.Paths.Lookup(ctx, h)
		switch {
		case errors.Is(err, cache.ErrNotFound):
			return rejected("reference %s/%s is neither in this cache nor in its upstreams: upload it first", narinfo.StoreDir, ref)
		case err != nil:
			return fmt.Errorf("reference %s: %w", ref, err)
		}
	}
	return nil
}

// checkSignature: a trusted signature, or the proxy's own key to vouch for
// it (the writer holds the write token, which is what the key trusts).
func (r *Receiver) checkSignature(ni *narinfo.Info) error {
	keys := r.opts.Keys
	if r.opts.SecretKey != nil {
		keys = append(keys[:len(keys):len(keys)], r.opts.SecretKey.ToPublicKey())
	}
	if narinfo.Verify(ni, keys) == nil || r.opts.SecretKey != nil {
		return nil
	}
	return fmt.Errorf("%w: %s is not signed by a trusted key, and the proxy has no --secret-key-file to sign it (sign it with `nix store sign`, or give the proxy a key)", ErrUnsigned, ni.StorePath)
}

// PutAux receives a listing ("<hash>.ls"), build log ("log/<drv>") or
// realisation ("realisations/…", "build-trace-v2/…"), stored as it came.
func (r *Receiver) PutAux(ctx context.Context, kind, key string, body []byte) (err error) {
	defer func() { r.observe(kind, false, err, int64(len(body))) }()
	return r.opts.Store.PutAux(ctx, key, body)
}
