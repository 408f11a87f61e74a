//go:build linux

package powercuttest

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestFollowersSeeWhatWasWritten follows files as they are written, the
// way the proxy's clients follow a download: one handle appends chunks
// that end inside pages, and followers open the file and send what was
// written so far to a socket (sendfile), as it lands. Every byte sent must
// be the byte written: a page read while a write into it is on its way to
// the backing file (zeros past the old end) must not stay cached once that
// write is done.
func TestFollowersSeeWhatWasWritten(t *testing.T) {
	_, mnt := mount(t, t.TempDir())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; time.Now().Before(deadline); round++ {
		if err := followWrite(ln, filepath.Join(mnt, fmt.Sprintf("f%d", round)), round); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

func followWrite(ln net.Listener, path string, round int) error {
	data := bytes.Repeat([]byte{byte(round%250 + 1)}, 96<<10)
	w, err := os.Create(path)
	if err != nil {
		return err
	}
	defer os.Remove(path)
	defer w.Close()
	var written atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	wg.Add(1)
	go func() { // the fill's own check, reading back what landed
		defer wg.Done()
		f, err := os.Open(path)
		if err != nil {
			errs <- err
			return
		}
		defer f.Close()
		b := make([]byte, len(data))
		var read int64
		for read < int64(len(data)) {
			if n := written.Load(); n > read {
				m, err := io.ReadFull(f, b[read:n])
				read += int64(m)
				if err != nil {
					errs <- err
					return
				}
			}
		}
	}()
	for range 2 {
		out, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		in, err := ln.Accept()
		if err != nil {
			return err
		}
		wg.Add(2)
		go func() { // the client
			defer wg.Done()
			defer in.Close()
			got, err := io.ReadAll(bufio.NewReader(in))
			if err == nil && (len(got) != len(data) || bytes.IndexByte(got, 0) >= 0) {
				err = fmt.Errorf("a follower sent %d bytes of %d, a zero at %d", len(got), len(data), bytes.IndexByte(got, 0))
			}
			if err != nil {
				errs <- err
			}
		}()
		go func() { // its follower
			defer wg.Done()
			defer out.Close()
			for written.Load() == 0 {
				runtime.Gosched()
			}
			f, err := os.Open(path)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			var sent int64
			for sent < int64(len(data)) {
				if n := written.Load(); n > sent {
					m, err := io.CopyN(out, f, n-sent) // sendfile
					sent += m
					if err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	for off, step := 0, 3978; off < len(data); step = 32 << 10 {
		end := min(off+step, len(data))
		if _, err := w.Write(data[off:end]); err != nil {
			return err
		}
		written.Store(int64(end))
		off = end
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}
