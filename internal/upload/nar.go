package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/nardecode"
	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

// PutNAR receives the NAR file called name (already validated). The file
// must hash to the sha256 its name states, and decompress to a NAR; what is
// measured of it waits, with the file, for the narinfo that claims it. A NAR
// already on disk is not written again. It returns the bytes read, and
// exists true when the NAR was already there.
func (r *Receiver) PutNAR(ctx context.Context, name string, body io.Reader) (n int64, exists bool, err error) {
	defer func() { r.observe("nar", exists, err, n) }()
	compression := compressionOf(name)
	if !nardecode.Supported(compression) {
		return 0, false, fmt.Errorf("%w: %q (use zstd, xz, bzip2 or none: `?compression=zstd` on the store URL)", ErrUnsupported, compression)
	}
	want, err := digestOf(name)
	if err != nil {
		return 0, false, rejected("NAR name %s: %v", name, err)
	}
	unlock := r.lock("nar/" + name)
	defer unlock()
	if ok, err := r.opts.Store.HasNAR(ctx, name); err != nil {
		return 0, false, err
	} else if ok {
		drain(body)
		return 0, true, nil
	}
	wr, err := r.opts.Store.CreateNAR(ctx, name)
	if err != nil {
		return 0, false, err
	}
	defer wr.Cancel()
	meter, err := nardecode.NewMeter(compression)
	if err != nil {
		return 0, false, err
	}
	n, err = io.Copy(io.MultiWriter(wr, meter), body)
	d, merr := meter.Close()
	if err != nil {
		// The client's body broke (or passed the size limit): nothing kept.
		return n, false, fmt.Errorf("receive NAR %s: %w", name, err)
	}
	if merr != nil {
		return n, false, rejected("NAR %s is not a %s file: %v", name, compression, merr)
	}
	if !equalDigest(d.FileSHA256, want) {
		return n, false, rejected("NAR %s: the body's sha256 is not the one its name states", name)
	}
	if err := wr.Commit(ctx); err != nil {
		return n, false, err
	}
	u := store.Upload{Compression: compression, FileSize: d.FileSize, NarHash: d.NarSHA256, NarSize: d.NarSize, Received: time.Now().UTC()}
	if err := r.opts.Store.PutUpload(ctx, name, u); err != nil {
		return n, false, err
	}
	r.log.Info("upload NAR", "nar", name, "bytes", n, "nar_size", d.NarSize)
	return n, false, nil
}

// measured returns what is known of the NAR file name on disk: from its
// upload row while it waits for a narinfo, else (a NAR that came another
// way) by reading it again.
func (r *Receiver) measured(ctx context.Context, name string) (store.Upload, error) {
	u, err := r.opts.Store.UploadOf(ctx, name)
	if !errors.Is(err, store.ErrNotFound) {
		return u, err
	}
	f, err := r.opts.Store.OpenNAR(ctx, name)
	if err != nil {
		return u, err
	}
	defer f.Close()
	d, err := nardecode.Measure(f, compressionOf(name))
	if err != nil {
		return u, fmt.Errorf("measure NAR %s: %w", name, err)
	}
	return store.Upload{Compression: compressionOf(name), FileSize: d.FileSize, NarHash: d.NarSHA256, NarSize: d.NarSize}, nil
}

func (r *Receiver) observe(kind string, exists bool, err error, n int64) {
	outcome := "ok"
	switch {
	case exists:
		outcome = "exists"
	case errors.Is(err, ErrRejected), errors.Is(err, ErrUnsigned), errors.Is(err, ErrUnsupported):
		outcome = "rejected"
	case err != nil:
		outcome = "error"
	}
	r.stats.add(outcome, n)
	r.opts.Observe(kind, outcome, n)
}

// sweepLoop drops uploaded NARs that no narinfo claimed in time: a `nix
// copy` that died between the NAR and its narinfo leaves them behind.
func (r *Receiver) sweepLoop() {
	defer close(r.done)
	t := time.NewTicker(min(r.opts.UnclaimedTTL/4, 5*time.Minute))
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			r.sweep()
		}
	}
}

func (r *Receiver) sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names, err := r.opts.Store.UnclaimedUploads(ctx, time.Now().Add(-r.opts.UnclaimedTTL))
	if err != nil {
		r.log.Warn("uploads: list unclaimed NARs", "err", err)
		return
	}
	for _, name := range names {
		unlock := r.lock("nar/" + name)
		err := r.opts.Store.DropUnclaimedUpload(ctx, name)
		unlock()
		if err != nil {
			r.log.Warn("uploads: drop unclaimed NAR", "nar", name, "err", err)
			continue
		}
		r.log.Info("uploads: dropped a NAR no narinfo claimed", "nar", name, "after", r.opts.UnclaimedTTL)
	}
}
