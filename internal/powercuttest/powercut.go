//go:build linux

// Package powercuttest is a file system for tests that loses, at a simulated
// power cut, every change that was not made durable: a FUSE loopback mount
// (as LazyFS is for Jepsen) whose reads and writes go through to a backing
// directory, while it keeps aside what a disk would still hold after the
// power went: a file's bytes as of its last fsync or fdatasync, a
// directory's entries as of its last fsync.
//
// The model is the strict POSIX one, not ext4's kinder journal: a write is
// durable only once its file is synced; a create, rename, link, unlink or
// mkdir only once the directory that holds the name is synced (a rename
// between two directories needs both); syncing a file makes no name
// durable. A cut may also tear: any page written since the file's last sync
// may or may not have reached the disk, as writeback flushes dirty pages in
// no order, so what a crash-safe program reads back must not depend on
// unsynced pages either way.
//
// Use: Mount over a backing dir, run the program on the mount point, Cut,
// stop the program (kill -9), Unmount, then Survivors writes what a disk
// would hold into a fresh directory to Mount again.
package powercuttest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// ErrUnavailable means this machine cannot mount a FUSE file system (no
// /dev/fuse, or not root): tests skip on it.
var ErrUnavailable = errors.New("powercuttest: FUSE mounts unavailable")

// FS is one mounted generation: what the program sees at the mount point,
// and what would survive a cut now.
type FS struct {
	live  string // the backing directory the mount shows
	state string // durable copies (data/<ino>) and unlinked files (grave/)
	mnt   string

	unmounted atomic.Bool

	mu      sync.Mutex
	cut     bool
	rootIno uint64
	// dirty holds, per inode, the byte ranges changed since its last sync.
	dirty map[uint64][]span
	// dirs holds, per directory inode, its entries as of its last sync.
	dirs   map[uint64]map[string]dentry
	graves int
	stats  Stats

	server *fuse.Server
}

// Stats counts what the program asked of the file system.
type Stats struct {
	Writes, FileSyncs, DirSyncs, NameChanges int
}

type span struct{ off, end int64 }

type dentry struct {
	ino    uint64
	mode   uint32
	target string // a symlink's
}

// Mount shows live at mnt. Everything in live counts as durable at the
// start; state is an empty directory on live's file system (unlinked files
// are kept there as links, so no inode number is reused in a generation).
func Mount(live, state, mnt string) (*FS, error) {
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	} else {
		f.Close()
	}
	p := &FS{live: live, state: state, mnt: mnt, dirty: map[uint64][]span{}, dirs: map[uint64]map[string]dentry{}}
	for _, d := range []string{p.dataDir(), p.graveDir()} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := p.snapshot(); err != nil {
		return nil, fmt.Errorf("powercuttest: snapshot %s: %w", live, err)
	}
	root, err := fs.NewLoopbackRoot(live)
	if err != nil {
		return nil, err
	}
	sec := time.Second
	opts := &fs.Options{
		EntryTimeout: &sec,
		AttrTimeout:  &sec,
		MountOptions: fuse.MountOptions{DirectMount: true, FsName: "powercut", Name: "powercut",
			// See keepCache.
			ExplicitDataCacheControl: true},
	}
	p.server, err = fs.Mount(mnt, &node{LoopbackNode: root.(*fs.LoopbackNode), pc: p}, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: mount %s: %v", ErrUnavailable, mnt, err)
	}
	return p, nil
}

func (p *FS) dataDir() string  { return filepath.Join(p.state, "data") }
func (p *FS) graveDir() string { return filepath.Join(p.state, "grave") }
func (p *FS) dataPath(ino uint64) string {
	return filepath.Join(p.dataDir(), strconv.FormatUint(ino, 10))
}

// snapshot records everything in live as durable.
func (p *FS) snapshot() error {
	var st syscall.Stat_t
	if err := syscall.Lstat(p.live, &st); err != nil {
		return err
	}
	p.rootIno = st.Ino
	return filepath.WalkDir(p.live, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := syscall.Lstat(path, &st); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			entries, err := readEntries(path)
			if err != nil {
				return err
			}
			p.dirs[st.Ino] = entries
		case d.Type().IsRegular():
			return copyFile(path, p.dataPath(st.Ino))
		}
		return nil
	})
}

// Cut is the power cut: from now on every change fails with EIO and what
// Survivors writes is fixed. Reads still work, so a program that is killed
// next sees no error it would not see from a failing disk.
func (p *FS) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
}

// Stats is what the program asked of the file system so far.
func (p *FS) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Unmount takes the mount away; the program must be gone. Once unmounted,
// it does nothing.
func (p *FS) Unmount() error {
	if p.unmounted.Swap(true) {
		return nil
	}
	var err error
	for range 50 {
		if err = p.server.Unmount(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Busy still: detach, so the test can go on.
	if derr := syscall.Unmount(p.mnt, syscall.MNT_DETACH); derr == nil {
		return nil
	}
	return err
}

// begin takes the lock for a change, or says EIO after the cut.
func (p *FS) begin() syscall.Errno {
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

// wrote records [off, off+n) of ino as changed since its last sync.
func (p *FS) wrote(ino uint64, off, n int64) {
	if n <= 0 {
		return
	}
	p.stats.Writes++
	s := p.dirty[ino]
	if k := len(s); k > 0 && s[k-1].end == off {
		s[k-1].end = off + n // sequential writes, the common case
	} else {
		s = append(s, span{off, off + n})
	}
	p.dirty[ino] = s
}

// syncFile makes ino's bytes durable: the changed ranges are copied from
// the live file (read through readAt, of size bytes now) into its durable
// copy, which takes the live size.
func (p *FS) syncFile(ino uint64, size int64, readAt func([]byte, int64) (int, error)) error {
	p.stats.FileSyncs++
	dst, err := os.OpenFile(p.dataPath(ino), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for _, s := range p.dirty[ino] {
		for off := s.off; off < min(s.end, size); {
			n, err := readAt(buf[:min(int64(len(buf)), s.end-off)], off)
			if n > 0 {
				if _, werr := dst.WriteAt(buf[:n], off); werr != nil {
					return werr
				}
				off += int64(n)
			}
			if err != nil || n == 0 {
				break // past the live end: truncated since
			}
		}
	}
	delete(p.dirty, ino)
	return dst.Truncate(size)
}

// syncDir makes the entries of the directory at path durable as they are.
func (p *FS) syncDir(path string) error {
	p.stats.DirSyncs++
	var st syscall.Stat_t
	if err := syscall.Lstat(path, &st); err != nil {
		return err
	}
	entries, err := readEntries(path)
	if err != nil {
		return err
	}
	p.dirs[st.Ino] = entries
	return nil
}

// bury keeps the file at path alive under state/grave before its name goes
// (unlink, or a rename over it), so its inode number is not reused while
// an older durable directory may still name it.
func (p *FS) bury(path string) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) != nil || st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		return
	}
	p.graves++
	syscall.Link(path, filepath.Join(p.graveDir(), strconv.Itoa(p.graves)))
}

func readEntries(dir string) (map[string]dentry, error) {
	names, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	entries := make(map[string]dentry, len(names))
	for _, e := range names {
		path := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil {
			continue // gone meanwhile
		}
		d := dentry{ino: st.Ino, mode: st.Mode}
		if st.Mode&syscall.S_IFMT == syscall.S_IFLNK {
			d.target, _ = os.Readlink(path)
		}
		entries[e.Name()] = d
	}
	return entries, nil
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// Survivors writes into dst (a new, empty directory) what the disk holds
// after the cut: the durable names, each file with its durable bytes.
// With tear non-nil, each page written since a file's last sync reached
// the disk or not at the toss of a coin.
func (p *FS) Survivors(dst string, tear *rand.Rand) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.cut {
		return errors.New("powercuttest: Survivors before Cut")
	}
	var livePaths map[uint64]string
	if tear != nil {
		livePaths = map[uint64]string{}
		for _, root := range []string{p.live, p.graveDir()} {
			filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
				var st syscall.Stat_t
				if err == nil && d.Type().IsRegular() && syscall.Lstat(path, &st) == nil {
					livePaths[st.Ino] = path
				}
				return nil
			})
		}
	}
	made := map[uint64]string{} // inode → its first path in dst, for hard links
	var build func(dirIno uint64, dir string) error
	build = func(dirIno uint64, dir string) error {
		for name, d := range p.dirs[dirIno] {
			path := filepath.Join(dir, name)
			switch d.mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				if err := os.Mkdir(path, os.FileMode(d.mode&0o777)); err != nil {
					return err
				}
				if err := build(d.ino, path); err != nil {
					return err
				}
			case syscall.S_IFLNK:
				if err := os.Symlink(d.target, path); err != nil {
					return err
				}
			case syscall.S_IFREG:
				if first, ok := made[d.ino]; ok {
					if err := os.Link(first, path); err != nil {
						return err
					}
					continue
				}
				made[d.ino] = path
				if err := p.survivingFile(d, path, livePaths, tear); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return build(p.rootIno, dst)
}

// survivingFile writes one file's durable bytes (plus, when tearing, some
// of its unsynced pages) to path.
func (p *FS) survivingFile(d dentry, path string, livePaths map[uint64]string, tear *rand.Rand) error {
	b, err := os.ReadFile(p.dataPath(d.ino))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if src, ok := livePaths[d.ino]; ok && tear != nil && len(p.dirty[d.ino]) > 0 {
		b, err = tearPages(b, src, p.dirty[d.ino], tear)
		if err != nil {
			return err
		}
	}
	return os.WriteFile(path, b, os.FileMode(d.mode&0o777))
}

const pageSize = 4096

// tearPages lays over durable each page of the changed spans that, by the
// coin, reached the disk; the file grows to cover the last one that did.
func tearPages(durable []byte, livePath string, spans []span, coin *rand.Rand) ([]byte, error) {
	live, err := os.ReadFile(livePath)
	if err != nil {
		return nil, err
	}
	out := durable
	for _, s := range spans {
		for pg := s.off / pageSize * pageSize; pg < s.end; pg += pageSize {
			if coin.IntN(2) == 0 {
				continue
			}
			lo, hi := max(pg, s.off), min(pg+pageSize, s.end, int64(len(live)))
			if lo >= hi {
				continue
			}
			if int64(len(out)) < hi {
				out = append(out, make([]byte, hi-int64(len(out)))...)
			}
			copy(out[lo:hi], live[lo:hi])
		}
	}
	return out, nil
}
