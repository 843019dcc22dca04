// Package crashfs is an in-memory vfs.FS that models what a power loss does
// to a file system, for crash-consistency tests of the WAL and snapshot store
// (and for the Raft simulation running over the real storage code).
//
// Every file keeps two images: what the process sees, and what is durable
// (as of its last Sync). Writes and truncates since the last Sync are kept as
// an ordered list of pending operations. Directory entries are modelled the
// same way: creates, renames and removes are pending until SyncDir of their
// parent. Crash turns the world into what a disk could hold after power loss:
// for each file, a random prefix of its pending operations survives, and the
// first lost write may survive as a torn prefix cut at a random byte; for each
// directory, a random prefix of its pending entry operations survives. All
// choices come from the caller's seeded rand.Rand, so a failure replays.
//
// A rename across directories is atomic (after a crash the file is in
// exactly one place) and durable after SyncDir of either directory, as on a
// journaling file system. FlipBits, TruncateFile and RemoveFile damage what
// the disk holds, for tests of recovery from corruption and loss.
//
// SetCrashAfter(n) arms a crash point: the n+1th mutating call fails with
// ErrCrashed (a write at the crash point is applied as a torn prefix first),
// and so does every call after it until Crash reboots the file system.
// Directories made with MkdirAll are durable at once (the code under test
// makes them only at initialisation).
//
// OpenDirect models O_DIRECT|O_DSYNC, once enabled with SetDirectIO (a new
// FS refuses it, as a file system without O_DIRECT does, so code that only
// knows Sync — and tests that break Sync on purpose — see the buffered path
// unless they ask): a write through it is durable when it
// returns (write and Sync in one step), and one cut by the crash point
// leaves a torn prefix that a Crash may keep or drop, like any unsynced
// write. It insists on what the kernel insists on (buffer, offset and
// length aligned to vfs.DirectAlign), and it refuses a direct write to a
// file with buffered writes not yet synced: a real O_DSYNC write makes only
// its own range durable, so code that relied on it to flush earlier
// buffered writes would be wrong, and is caught here instead of being
// rescued by a model stronger than the kernel.
package crashfs

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path"
	"sort"
	"strings"
	"sync"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// ErrCrashed is returned by every call after the armed crash point, and by
// handles opened before the last Crash.
var ErrCrashed = errors.New("crashfs: simulated crash")

type opKind uint8

const (
	opWrite opKind = iota
	opTruncate
	opCreate
	opRename
	opRemove
)

type fileOp struct {
	kind opKind
	off  int64
	data []byte
	size int64
}

type inode struct {
	data     []byte   // what the process sees
	synced   []byte   // durable image
	unsynced []fileOp // applied to data, not yet to synced
}

type dirOp struct {
	kind    opKind
	name    string // full path
	newname string // full path, for rename
	ino     *inode
	// applied is set once the op reached the durable namespace: a rename
	// across directories is pending in both, and either's SyncDir (or a
	// crash keeping it in either) applies it once, atomically, as a
	// journaling file system commits a rename in one transaction.
	applied, visiting bool
}

// FS is the crash-simulating file system. The zero value is not usable; call New.
type FS struct {
	mu      sync.Mutex
	dirs    map[string]bool
	cur     map[string]*inode // namespace the process sees
	durable map[string]*inode // namespace that survives a crash
	pending map[string][]*dirOp
	locks   map[string]bool
	gen     int

	direct  bool  // OpenDirect allowed (SetDirectIO)
	ops     int64 // mutating calls so far
	crashAt int64 // 0: disarmed; else crash on the call numbered crashAt
	crashed bool
	tearRng *rand.Rand
}

// New returns an empty file system.
func New() *FS {
	return &FS{
		dirs:    map[string]bool{"/": true, ".": true},
		cur:     map[string]*inode{},
		durable: map[string]*inode{},
		pending: map[string][]*dirOp{},
		locks:   map[string]bool{},
	}
}

var (
	_ vfs.FS       = (*FS)(nil)
	_ vfs.DirectFS = (*FS)(nil)
)

// SetCrashAfter arms a crash: after n more mutating calls succeed, the next
// one crashes. A write at the crash point leaves a torn prefix (length chosen
// by rng) in the unsynced image. n < 0 disarms.
func (fs *FS) SetCrashAfter(n int64, rng *rand.Rand) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if n < 0 {
		fs.crashAt = 0
		return
	}
	fs.crashAt = fs.ops + n + 1
	fs.tearRng = rng
}

// Ops returns how many mutating calls have been made (for choosing crash points).
func (fs *FS) Ops() int64 {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.ops
}

// Crashed reports whether the armed crash point has been reached.
func (fs *FS) Crashed() bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.crashed
}

// step counts a mutating call and reports whether it must fail. Called with mu held.
func (fs *FS) step() error {
	if fs.crashed {
		return ErrCrashed
	}
	fs.ops++
	if fs.crashAt != 0 && fs.ops >= fs.crashAt {
		fs.crashed = true
		return ErrCrashed
	}
	return nil
}

// Crash simulates power loss and reboot: unsynced state is dropped or torn
// as described in the package doc, locks are released and all open handles
// become invalid.
func (fs *FS) Crash(rng *rand.Rand) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	// Directory entries: a random prefix of each directory's pending ops.
	dirs := make([]string, 0, len(fs.pending))
	for d := range fs.pending {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs) // map order must not leak into the seeded choices
	for _, d := range dirs {
		ops := fs.pending[d]
		fs.commit(d, rng.Intn(len(ops)+1))
	}
	fs.pending = map[string][]*dirOp{}
	// File contents: every inode still named after the crash.
	names := make([]string, 0, len(fs.durable))
	for n := range fs.durable {
		names = append(names, n)
	}
	sort.Strings(names)
	seen := map[*inode]bool{}
	for _, n := range names {
		ino := fs.durable[n]
		if seen[ino] {
			continue
		}
		seen[ino] = true
		img := append([]byte(nil), ino.synced...)
		k := rng.Intn(len(ino.unsynced) + 1)
		for _, op := range ino.unsynced[:k] {
			img = applyFileOp(img, op)
		}
		if k < len(ino.unsynced) && ino.unsynced[k].kind == opWrite && rng.Intn(2) == 0 {
			op := ino.unsynced[k]
			op.data = op.data[:rng.Intn(len(op.data)+1)]
			img = applyFileOp(img, op)
		}
		ino.data = img
		ino.synced = append([]byte(nil), img...)
		ino.unsynced = nil
	}
	fs.cur = make(map[string]*inode, len(fs.durable))
	for n, ino := range fs.durable {
		fs.cur[n] = ino
	}
	fs.locks = map[string]bool{}
	fs.gen++
	fs.crashed = false
	fs.crashAt = 0
}

// commit makes the first k pending entry operations of dir d durable. A
// rename across directories first commits what precedes it in the other
// directory (a journal commits in order), so an earlier create is never
// replayed after the rename that moved its file away. Called with mu held.
func (fs *FS) commit(d string, k int) {
	for _, op := range fs.pending[d][:k] {
		if op.applied || op.visiting {
			continue
		}
		op.visiting = true
		for _, other := range []string{path.Dir(op.name), path.Dir(op.newname)} {
			if op.kind == opRename && other != d {
				for i, o := range fs.pending[other] {
					if o == op {
						fs.commit(other, i)
						break
					}
				}
			}
		}
		applyDirOp(fs.durable, op)
	}
}

func applyDirOp(ns map[string]*inode, op *dirOp) {
	op.applied = true
	switch op.kind {
	case opCreate:
		ns[op.name] = op.ino
	case opRename:
		if ino, ok := ns[op.name]; ok {
			delete(ns, op.name)
			ns[op.newname] = ino
		} else {
			ns[op.newname] = op.ino
		}
	case opRemove:
		delete(ns, op.name)
	}
}

func applyFileOp(img []byte, op fileOp) []byte {
	switch op.kind {
	case opWrite:
		end := op.off + int64(len(op.data))
		if end > int64(len(img)) {
			img = append(img, make([]byte, end-int64(len(img)))...)
		}
		copy(img[op.off:], op.data)
	case opTruncate:
		if op.size <= int64(len(img)) {
			img = img[:op.size]
		} else {
			img = append(img, make([]byte, op.size-int64(len(img)))...)
		}
	}
	return img
}

func clean(name string) string { return path.Clean(name) }

// SetFile installs a file with durable contents, for tests and fuzzing that
// start from arbitrary bytes on disk.
func (fs *FS) SetFile(name string, data []byte) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = clean(name)
	ino := &inode{data: append([]byte(nil), data...), synced: append([]byte(nil), data...)}
	fs.cur[name] = ino
	fs.durable[name] = ino
}

// ReadFile returns the current (process-visible) contents of name.
func (fs *FS) ReadFile(name string) ([]byte, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ino, ok := fs.cur[clean(name)]
	if !ok {
		return nil, false
	}
	return append([]byte(nil), ino.data...), true
}

// The three helpers below model media damage: they change what the disk
// holds, durably and at once, and do not count as file-system calls (no
// crash point lands in them). Use them on a powered-off disk (after Crash,
// or after the code under test closed its files) to test recovery from
// corruption and loss.

// FlipBits XORs the byte at offset off of file name with mask (non-zero):
// a corrupted byte.
func (fs *FS) FlipBits(name string, off int64, mask byte) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ino, ok := fs.durable[clean(name)]
	if !ok {
		return notExist("flip", name)
	}
	if mask == 0 || off < 0 || off >= int64(len(ino.synced)) || off >= int64(len(ino.data)) {
		return fmt.Errorf("crashfs: flip byte %d of %s (%d bytes) with mask %#x: out of range or no-op", off, name, len(ino.synced), mask)
	}
	ino.synced[off] ^= mask
	ino.data[off] ^= mask
	return nil
}

// TruncateFile cuts file name to size bytes: a file whose tail was lost.
func (fs *FS) TruncateFile(name string, size int64) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	ino, ok := fs.durable[clean(name)]
	if !ok {
		return notExist("truncate", name)
	}
	if size < 0 || size > int64(len(ino.synced)) {
		return fmt.Errorf("crashfs: truncate %s (%d bytes) to %d: out of range", name, len(ino.synced), size)
	}
	ino.synced = ino.synced[:size]
	ino.data = ino.data[:min(size, int64(len(ino.data)))]
	return nil
}

// RemoveFile deletes file name from the disk: a file the file system lost.
func (fs *FS) RemoveFile(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = clean(name)
	if _, ok := fs.durable[name]; !ok {
		return notExist("remove", name)
	}
	delete(fs.durable, name)
	delete(fs.cur, name)
	return nil
}

func notExist(op, name string) error {
	return &os.PathError{Op: op, Path: name, Err: os.ErrNotExist}
}

// Create implements vfs.FS.
func (fs *FS) Create(name string) (vfs.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.step(); err != nil {
		return nil, err
	}
	name = clean(name)
	if !fs.dirs[path.Dir(name)] {
		return nil, notExist("create", name)
	}
	if ino, ok := fs.cur[name]; ok {
		// O_TRUNC on an existing file is a pending truncate of that inode.
		ino.data = ino.data[:0]
		ino.unsynced = append(ino.unsynced, fileOp{kind: opTruncate, size: 0})
		return &file{fs: fs, ino: ino, gen: fs.gen, name: name}, nil
	}
	ino := &inode{}
	fs.cur[name] = ino
	d := path.Dir(name)
	fs.pending[d] = append(fs.pending[d], &dirOp{kind: opCreate, name: name, ino: ino})
	return &file{fs: fs, ino: ino, gen: fs.gen, name: name}, nil
}

func (fs *FS) open(name string, ro bool) (vfs.File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.crashed {
		return nil, ErrCrashed
	}
	name = clean(name)
	ino, ok := fs.cur[name]
	if !ok {
		return nil, notExist("open", name)
	}
	return &file{fs: fs, ino: ino, gen: fs.gen, name: name, ro: ro}, nil
}

// OpenRW implements vfs.FS.
func (fs *FS) OpenRW(name string) (vfs.File, error) { return fs.open(name, false) }

// Open implements vfs.FS.
func (fs *FS) Open(name string) (vfs.File, error) { return fs.open(name, true) }

// SetDirectIO enables or disables OpenDirect (disabled in a new FS); it
// applies to later OpenDirect calls.
func (fs *FS) SetDirectIO(on bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.direct = on
}

// OpenDirect implements vfs.DirectFS; see the package doc for the model.
// Unless enabled by SetDirectIO it fails with vfs.ErrDirectUnsupported.
func (fs *FS) OpenDirect(name string) (vfs.DirectWriter, error) {
	fs.mu.Lock()
	on := fs.direct
	fs.mu.Unlock()
	if !on {
		return nil, fmt.Errorf("crashfs: open %s for direct writes: %w (not enabled by SetDirectIO)", name, vfs.ErrDirectUnsupported)
	}
	f, err := fs.open(name, false)
	if err != nil {
		return nil, err
	}
	return &directFile{f.(*file)}, nil
}

type directFile struct{ f *file }

// WriteAt applies p to both images at once (a write plus its sync).
func (d *directFile) WriteAt(p []byte, off int64) (int, error) {
	f := d.f
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	if !vfs.IsAligned(p, off) {
		return 0, fmt.Errorf("crashfs: direct write to %s: %d bytes at offset %d not aligned to %d", f.name, len(p), off, vfs.DirectAlign)
	}
	if len(f.ino.unsynced) > 0 {
		return 0, fmt.Errorf("crashfs: direct write to %s over %d unsynced buffered operations (O_DSYNC would not make them durable)", f.name, len(f.ino.unsynced))
	}
	if err := f.fs.step(); err != nil {
		// Cut mid-write: a prefix may have reached the disk, or none of it.
		f.tear(p, off)
		return 0, err
	}
	op := fileOp{kind: opWrite, off: off, data: p}
	f.ino.data = applyFileOp(f.ino.data, op)
	f.ino.synced = applyFileOp(f.ino.synced, op)
	return len(p), nil
}

func (d *directFile) Close() error { return d.f.Close() }

// tear applies a random prefix of a write cut by the crash point, as an
// unsynced write that a Crash may keep or drop. Called with fs.mu held.
func (f *file) tear(p []byte, off int64) {
	if f.fs.tearRng == nil || len(p) == 0 {
		return
	}
	op := fileOp{kind: opWrite, off: off, data: append([]byte(nil), p[:f.fs.tearRng.Intn(len(p)+1)]...)}
	f.ino.data = applyFileOp(f.ino.data, op)
	f.ino.unsynced = append(f.ino.unsynced, op)
}

// Remove implements vfs.FS.
func (fs *FS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.step(); err != nil {
		return err
	}
	name = clean(name)
	if _, ok := fs.cur[name]; !ok {
		return notExist("remove", name)
	}
	delete(fs.cur, name)
	d := path.Dir(name)
	fs.pending[d] = append(fs.pending[d], &dirOp{kind: opRemove, name: name})
	return nil
}

// Rename implements vfs.FS. A rename within one directory is durable after
// SyncDir of that directory; one across directories after SyncDir of
// either (it is applied atomically: the file is never in both places or in
// neither after a crash).
func (fs *FS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.step(); err != nil {
		return err
	}
	oldname, newname = clean(oldname), clean(newname)
	ino, ok := fs.cur[oldname]
	if !ok {
		return notExist("rename", oldname)
	}
	d, nd := path.Dir(oldname), path.Dir(newname)
	if !fs.dirs[nd] {
		return notExist("rename", newname)
	}
	delete(fs.cur, oldname)
	fs.cur[newname] = ino
	op := &dirOp{kind: opRename, name: oldname, newname: newname, ino: ino}
	fs.pending[d] = append(fs.pending[d], op)
	if nd != d {
		fs.pending[nd] = append(fs.pending[nd], op)
	}
	return nil
}

// List implements vfs.FS.
func (fs *FS) List(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.crashed {
		return nil, ErrCrashed
	}
	dir = clean(dir)
	if !fs.dirs[dir] {
		return nil, notExist("readdir", dir)
	}
	var names []string
	for n := range fs.cur {
		if path.Dir(n) == dir {
			names = append(names, path.Base(n))
		}
	}
	for d := range fs.dirs {
		if d != dir && path.Dir(d) == dir {
			names = append(names, path.Base(d))
		}
	}
	sort.Strings(names)
	return names, nil
}

// MkdirAll implements vfs.FS; directories are durable at once.
func (fs *FS) MkdirAll(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.step(); err != nil {
		return err
	}
	dir = clean(dir)
	for d := dir; !fs.dirs[d]; d = path.Dir(d) {
		fs.dirs[d] = true
		if strings.Count(d, "/") == 0 {
			break
		}
	}
	return nil
}

// SyncDir implements vfs.FS: the directory's pending entry operations become durable.
func (fs *FS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err := fs.step(); err != nil {
		return err
	}
	dir = clean(dir)
	if !fs.dirs[dir] {
		return notExist("fsync", dir)
	}
	fs.commit(dir, len(fs.pending[dir]))
	delete(fs.pending, dir)
	return nil
}

type lock struct {
	fs   *FS
	name string
	gen  int
}

func (l *lock) Close() error {
	l.fs.mu.Lock()
	defer l.fs.mu.Unlock()
	if l.gen == l.fs.gen {
		delete(l.fs.locks, l.name)
	}
	return nil
}

// Lock implements vfs.FS with an in-memory lock table (cleared by Crash).
func (fs *FS) Lock(name string) (io.Closer, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.crashed {
		return nil, ErrCrashed
	}
	name = clean(name)
	if fs.locks[name] {
		return nil, fmt.Errorf("lock %s: %w", name, vfs.ErrLocked)
	}
	fs.locks[name] = true
	return &lock{fs: fs, name: name, gen: fs.gen}, nil
}

type file struct {
	fs     *FS
	ino    *inode
	gen    int
	name   string
	ro     bool
	closed bool
}

func (f *file) check() error {
	if f.fs.crashed || f.gen != f.fs.gen {
		return ErrCrashed
	}
	if f.closed {
		return os.ErrClosed
	}
	return nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("crashfs: negative offset")
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	if f.ro {
		return 0, fmt.Errorf("write %s: read-only handle", f.name)
	}
	if err := f.fs.step(); err != nil {
		// The crash lands mid-write: part of it may have reached the page cache.
		f.tear(p, off)
		return 0, err
	}
	op := fileOp{kind: opWrite, off: off, data: append([]byte(nil), p...)}
	f.ino.data = applyFileOp(f.ino.data, op)
	f.ino.unsynced = append(f.ino.unsynced, op)
	return len(p), nil
}

func (f *file) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if err := f.fs.step(); err != nil {
		return err
	}
	op := fileOp{kind: opTruncate, size: size}
	f.ino.data = applyFileOp(f.ino.data, op)
	f.ino.unsynced = append(f.ino.unsynced, op)
	return nil
}

func (f *file) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return err
	}
	if err := f.fs.step(); err != nil {
		return err
	}
	// Replay the pending operations onto the durable image: cost is the
	// bytes written since the last Sync, not the file size.
	for _, op := range f.ino.unsynced {
		f.ino.synced = applyFileOp(f.ino.synced, op)
	}
	f.ino.unsynced = nil
	return nil
}

func (f *file) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check(); err != nil {
		return 0, err
	}
	return int64(len(f.ino.data)), nil
}

func (f *file) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.closed = true
	return nil
}
