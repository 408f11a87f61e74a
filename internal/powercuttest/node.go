//go:build linux

package powercuttest

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// node is a loopback node whose changes go through the FS's bookkeeping:
// each takes the FS's lock (so a cut falls between two changes, never in
// one) and fails with EIO after the cut.
type node struct {
	*fs.LoopbackNode
	pc *FS
}

var (
	_ fs.NodeWrapChilder    = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeFsyncer        = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
)

// WrapChild makes every node below the root one of ours.
func (n *node) WrapChild(ctx context.Context, ops fs.InodeEmbedder) fs.InodeEmbedder {
	return &node{LoopbackNode: ops.(*fs.LoopbackNode), pc: n.pc}
}

// backing is the node's path in the live directory.
func (n *node) backing() string { return filepath.Join(n.RootData.Path, n.Path(nil)) }

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC == 0 {
		fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
		return n.wrap(fh, n.ino()), ff | keepCache, errno
	}
	if errno := n.pc.begin(); errno != 0 {
		return nil, 0, errno
	}
	defer n.pc.mu.Unlock()
	var st syscall.Stat_t
	syscall.Lstat(n.backing(), &st)
	fh, ff, errno := n.LoopbackNode.Open(ctx, flags)
	if errno == 0 {
		n.pc.wrote(n.ino(), 0, st.Size)
	}
	return n.wrap(fh, n.ino()), ff | keepCache, errno
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if errno := n.pc.begin(); errno != 0 {
		return nil, nil, 0, errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	ch, fh, ff, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, n.wrap(fh, ch.StableAttr().Ino), ff | keepCache, 0
}

// keepCache asks the kernel to keep a file's cached pages when it is
// opened. Every byte reaches the backing file through this mount, so the
// page cache is never older than the file; but dropping it is not safe: a
// page dropped while a write into it is on its way to the backing file
// (the kernel copies the bytes into the page, then sends them) is read
// back from the file without them, zeros past the old end, and stays so.
// A download's follower opening its part file then streamed those zeros
// (issue 22). ExplicitDataCacheControl (Mount) stops the other drop, on
// a changed mtime or size.
const keepCache = fuse.FOPEN_KEEP_CACHE

func (n *node) wrap(fh fs.FileHandle, ino uint64) fs.FileHandle {
	lf, ok := fh.(*fs.LoopbackFile)
	if !ok {
		return fh // nil on error
	}
	return &file{LoopbackFile: lf, pc: n.pc, ino: ino}
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.pc.begin(); errno != 0 {
		return nil, errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	return n.LoopbackNode.Mkdir(ctx, name, mode, out)
}

func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM // nothing here makes device files or fifos
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.pc.begin(); errno != 0 {
		return nil, errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	return n.LoopbackNode.Symlink(ctx, target, name, out)
}

func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if errno := n.pc.begin(); errno != 0 {
		return nil, errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	return n.LoopbackNode.Link(ctx, target, name, out)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if errno := n.pc.begin(); errno != 0 {
		return errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	n.pc.bury(filepath.Join(n.backing(), name))
	return n.LoopbackNode.Unlink(ctx, name)
}

// Rmdir moves the empty directory under state/grave rather than removing
// it, so its inode number is not reused (see bury).
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if errno := n.pc.begin(); errno != 0 {
		return errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	path := filepath.Join(n.backing(), name)
	entries, err := os.ReadDir(path)
	if err != nil {
		return fs.ToErrno(err)
	}
	if len(entries) > 0 {
		return syscall.ENOTEMPTY
	}
	n.pc.graves++
	return fs.ToErrno(syscall.Rename(path, filepath.Join(n.pc.graveDir(), strconv.Itoa(n.pc.graves))))
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if errno := n.pc.begin(); errno != 0 {
		return errno
	}
	defer n.pc.mu.Unlock()
	n.pc.stats.NameChanges++
	if np, ok := newParent.(*node); ok && flags == 0 {
		n.pc.bury(filepath.Join(np.backing(), newName))
	}
	return n.LoopbackNode.Rename(ctx, name, newParent, newName, flags)
}

func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if errno := n.pc.begin(); errno != 0 {
		return errno
	}
	defer n.pc.mu.Unlock()
	size, truncating := in.GetSize()
	var st syscall.Stat_t
	if truncating {
		syscall.Lstat(n.backing(), &st)
	}
	if errno := n.LoopbackNode.Setattr(ctx, unwrap(f), in, out); errno != 0 {
		return errno
	}
	if truncating && int64(size) < st.Size {
		// The cut-off bytes read as zeros if the file grows again: the
		// durable copy must lose them at the next sync too.
		n.pc.wrote(n.ino(), int64(size), st.Size-int64(size))
	}
	return 0
}

// Fsync makes a file's bytes durable (fsync and fdatasync alike: both
// make the size durable that reading the data needs).
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	lf, ok := f.(*file)
	if !ok {
		return syscall.EBADF
	}
	if errno := n.pc.begin(); errno != 0 {
		return errno
	}
	defer n.pc.mu.Unlock()
	var attr fuse.AttrOut
	if errno := lf.LoopbackFile.Getattr(ctx, &attr); errno != 0 {
		return errno
	}
	readAt := func(b []byte, off int64) (int, error) {
		res, errno := lf.LoopbackFile.Read(ctx, b, off)
		if errno != 0 {
			return 0, errno
		}
		got, st := res.Bytes(b)
		if !st.Ok() {
			return 0, syscall.EIO
		}
		return copy(b, got), nil
	}
	return fs.ToErrno(n.pc.syncFile(lf.ino, int64(attr.Size), readAt))
}

// CopyFileRange is refused, so the kernel falls back to reads and writes
// that the bookkeeping sees.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode, fhOut fs.FileHandle, offOut, len, flags uint64) (uint32, syscall.Errno) {
	return 0, syscall.ENOSYS
}

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	fh, ff, errno := n.LoopbackNode.OpendirHandle(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &dirHandle{loopDir: fh.(loopDir), n: n}, ff, 0
}

type loopDir interface {
	fs.FileReleasedirer
	fs.FileSeekdirer
	fs.FileReaddirenter
}

// dirHandle is an open directory whose fsync makes its entries durable.
type dirHandle struct {
	loopDir
	n *node
}

var _ fs.FileFsyncdirer = (*dirHandle)(nil)

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	if errno := d.n.pc.begin(); errno != 0 {
		return errno
	}
	defer d.n.pc.mu.Unlock()
	return fs.ToErrno(d.n.pc.syncDir(d.n.backing()))
}

// file is an open file whose writes are recorded as unsynced. It never
// offers the kernel its backing fd: with FUSE passthrough, writes would
// bypass the bookkeeping.
type file struct {
	*fs.LoopbackFile
	pc  *FS
	ino uint64
}

func unwrap(f fs.FileHandle) fs.FileHandle {
	if lf, ok := f.(*file); ok {
		return lf.LoopbackFile
	}
	return f
}

// PassthroughFd says no, see file.
func (f *file) PassthroughFd() (int, bool) { return -1, false }

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.pc.begin(); errno != 0 {
		return 0, errno
	}
	defer f.pc.mu.Unlock()
	n, errno := f.LoopbackFile.Write(ctx, data, off)
	f.pc.wrote(f.ino, off, int64(n))
	return n, errno
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	var all []byte
	for _, b := range data {
		all = append(all, b...)
	}
	return f.Write(ctx, all, off)
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if errno := f.pc.begin(); errno != 0 {
		return errno
	}
	defer f.pc.mu.Unlock()
	errno := f.LoopbackFile.Allocate(ctx, off, size, mode)
	if errno == 0 {
		f.pc.wrote(f.ino, int64(off), int64(size))
	}
	return errno
}
