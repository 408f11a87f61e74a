package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/nix-cache-proxy/nix-cache-proxy/internal/store"
)

var _ store.JoiningFiles = (*Bucket)(nil)

// joinPoll is how often it looks.
const joinPoll = 200 * time.Millisecond

// CreateJoined implements store.JoiningFiles: the NAR lands in the spool
// alone, for this proxy's clients, and is not uploaded: the peer whose
// download it streams writes it to the bucket. Commit returns once the
// peer's object is there, of the same size (the peer completes its upload
// just after sending the last byte); after Options.JoinWait without it,
// Commit uploads the spooled copy.
func (b *Bucket) CreateJoined(name string) (store.PartFile, error) {
	spool, err := os.CreateTemp(b.spool, name+".*")
	if err != nil {
		return nil, fmt.Errorf("create spool file: %w", err)
	}
	return &joinedPart{b: b, name: name, spool: spool}, nil
}

// joinedPart is a NAR another proxy is writing to the bucket, spooled
// here for the clients following this proxy's flight.
type joinedPart struct {
	b        *Bucket
	name     string
	spool    *os.File
	size     int64
	finished bool
}

func (p *joinedPart) Write(b []byte) (int, error) {
	n, err := p.spool.Write(b)
	p.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("write spool file: %w", err)
	}
	return n, nil
}

func (p *joinedPart) Sync() error { return nil }

func (p *joinedPart) OpenPartial() (store.NARFile, error) { return os.Open(p.spool.Name()) }

// Commit implements store.PartFile: it waits for the peer's object. If
// that never comes (the peer failed after sending the last byte), it
// uploads the spooled copy, as a fill of its own would have.
func (p *joinedPart) Commit() (int64, error) {
	if p.finished {
		return 0, errors.New("s3store: NAR already finished")
	}
	p.finished = true
	defer p.drop()
	ctx, cancel := context.WithTimeout(context.Background(), p.b.joinWait)
	defer cancel()
	for {
		o, err := p.b.StatNARObject(ctx, p.name)
		if err == nil {
			if o.Size != p.size {
				return 0, fmt.Errorf("NAR %s in the bucket has %d bytes, the peer sent %d", p.name, o.Size, p.size)
			}
			return p.size, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return p.uploadOwn()
		case <-time.After(joinPoll):
		}
	}
}

// uploadOwn writes the spooled copy to the bucket like any fill (and
// loses to the peer's, harmlessly, if that lands meanwhile).
func (p *joinedPart) uploadOwn() (int64, error) {
	own, err := p.b.Create(p.name)
	if err != nil {
		return 0, err
	}
	if _, err := p.spool.Seek(0, io.SeekStart); err != nil {
		own.Discard()
		return 0, fmt.Errorf("read spool file: %w", err)
	}
	if _, err := io.Copy(own, p.spool); err != nil {
		own.Discard()
		return 0, fmt.Errorf("upload joined NAR %s: %w", p.name, err)
	}
	return own.Commit()
}

func (p *joinedPart) drop() {
	p.spool.Close()
	os.Remove(p.spool.Name())
}

// Discard implements store.PartFile.
func (p *joinedPart) Discard() error {
	if p.finished {
		return nil
	}
	p.finished = true
	p.drop()
	return nil
}
