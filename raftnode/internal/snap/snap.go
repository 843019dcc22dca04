// Package snap stores Raft snapshots as checksummed files, one per snapshot,
// named by last included index and term.
//
// A snapshot is written to a temporary file, fsynced, renamed into place and
// the directory fsynced, so a crash leaves either the whole snapshot or none
// of it. The newest K are kept. Nothing here loads a multi-gigabyte
// snapshot into memory: Writer receives one chunk by chunk (a state
// machine's stream, or a leader's), Stream reads one sequentially and
// checks its checksum as it reaches the end (each byte read once: sending
// to a follower, restoring), and Open verifies one by streaming through
// it before serving it (recovery).
//
// File format (little endian):
//
//	magic "CRSNAP\x00" version uint8 | metaLen uint32 | metaCRC uint32 | meta |
//	data ... | dataLen uint64 | dataCRC uint32 | "SEND"
//
// where meta (version 1) is index, term, autoLeave, then the four ConfState
// id lists (voters, learners, outgoing voters, next learners), each a
// uint32 count followed by uint64 ids. Version 2, written since storage
// incarnations exist, appends ConfState.Incarnations (a uint32 count of
// id, incarnation pairs of uint64) and ConfState.AutoPromote (an id list).
// Both versions are read.
package snap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

const (
	// magicPrefix plus a version byte starts every snapshot file.
	magicPrefix = "CRSNAP\x00"
	magic       = magicPrefix + "\x02" // what Create writes
	trailMagic  = "SEND"
	trailerSize = 8 + 4 + 4
	maxMetaSize = 1 << 20 // a ConfState of 100k members still fits
	suffix      = ".snap"
	tmpSuffix   = ".snap.tmp"
	// corruptSuffix is added to the name of a snapshot file that failed
	// verification.
	corruptSuffix = ".corrupt"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is wrapped by errors about a snapshot file that fails
// verification.
var ErrCorrupt = errors.New("snap: corrupt snapshot file")

// ErrNotFound is returned when no snapshot file has the requested index and term.
var ErrNotFound = errors.New("snap: snapshot not found")

// Ref names a snapshot by its last included index and term.
type Ref struct {
	Index uint64
	Term  uint64
}

func fileName(r Ref) string { return fmt.Sprintf("%016x-%016x%s", r.Index, r.Term, suffix) }

func parseName(name string) (Ref, bool) {
	base, ok := strings.CutSuffix(name, suffix)
	if !ok || len(base) != 33 || base[16] != '-' {
		return Ref{}, false
	}
	i, err1 := strconv.ParseUint(base[:16], 16, 64)
	t, err2 := strconv.ParseUint(base[17:], 16, 64)
	if err1 != nil || err2 != nil {
		return Ref{}, false
	}
	return Ref{Index: i, Term: t}, true
}

// Store is a directory of snapshot files. Its methods are safe for
// concurrent use.
type Store struct {
	fs   vfs.FS
	dir  string
	keep int
	log  hclog.Logger
	mu   sync.Mutex // serialises commits and retention

	tmpSeq atomic.Uint64 // names temporary files apart
	read   atomic.Int64  // bytes read from snapshot files (BytesRead)
}

// BytesRead is how many bytes of snapshot files the store has read since
// it was opened: verifying (Open, Newest, Load) and streaming (Stream).
func (s *Store) BytesRead() int64 { return s.read.Load() }

// Open opens the snapshot directory (which must exist), removing temporary
// files left by a crash mid-write. keep (at least 1) is how many snapshots
// to retain.
func Open(fs vfs.FS, dir string, keep int, log hclog.Logger) (*Store, error) {
	if keep < 1 {
		keep = 1
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	s := &Store{fs: fs, dir: dir, keep: keep, log: log}
	names, err := fs.List(dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshot dir %s: %w", dir, err)
	}
	removed := false
	for _, n := range names {
		if strings.HasSuffix(n, tmpSuffix) {
			log.Info("removing incomplete snapshot left by a crash", "file", n)
			if err := fs.Remove(path.Join(dir, n)); err != nil {
				return nil, fmt.Errorf("remove temporary snapshot %s: %w", n, err)
			}
			removed = true
		}
	}
	if removed {
		if err := fs.SyncDir(dir); err != nil {
			return nil, fmt.Errorf("sync snapshot dir %s: %w", dir, err)
		}
	}
	return s, nil
}

// List returns the snapshots present, newest (highest index) first. It does
// not verify them.
func (s *Store) List() ([]Ref, error) {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list snapshot dir %s: %w", s.dir, err)
	}
	var refs []Ref
	for _, n := range names {
		if r, ok := parseName(n); ok {
			refs = append(refs, r)
		}
	}
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].Index != refs[j].Index {
			return refs[i].Index > refs[j].Index
		}
		return refs[i].Term > refs[j].Term
	})
	return refs, nil
}

// Newest returns the metadata of the newest snapshot that verifies. Corrupt
// newer snapshots are skipped with a warning naming the file and the fault,
// and renamed to <name>.corrupt (kept for inspection): a snapshot with the
// same index and term received later must not be mistaken for it (Has).
// ok is false if there is no valid snapshot.
func (s *Store) Newest() (meta raft.SnapshotMeta, ok bool, err error) {
	refs, err := s.List()
	if err != nil {
		return raft.SnapshotMeta{}, false, err
	}
	for _, ref := range refs {
		r, err := s.Open(ref)
		if err != nil {
			s.log.Warn("skipping unreadable snapshot, falling back to an older one", "file", fileName(ref), "error", err)
			if errors.Is(err, ErrCorrupt) {
				if err := s.setAside(ref); err != nil {
					return raft.SnapshotMeta{}, false, err
				}
			}
			continue
		}
		meta := r.Meta()
		r.Close()
		return meta, true, nil
	}
	return raft.SnapshotMeta{}, false, nil
}

// setAside renames a corrupt snapshot file out of the way, durably, to a
// name no other file has.
func (s *Store) setAside(ref Ref) error {
	names, err := s.fs.List(s.dir)
	if err != nil {
		return fmt.Errorf("list snapshot dir %s: %w", s.dir, err)
	}
	to := fileName(ref) + corruptSuffix
	for k := 1; slices.Contains(names, to); k++ {
		to = fmt.Sprintf("%s%s-%d", fileName(ref), corruptSuffix, k)
	}
	from := path.Join(s.dir, fileName(ref))
	if err := s.fs.Rename(from, path.Join(s.dir, to)); err != nil {
		return fmt.Errorf("set corrupt snapshot %s aside: %w", from, err)
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sync snapshot dir %s: %w", s.dir, err)
	}
	s.log.Warn("corrupt snapshot set aside", "file", from, "moved_to", to)
	return nil
}

// Has reports whether a snapshot file for ref exists (not verified).
func (s *Store) Has(ref Ref) bool {
	f, err := s.fs.Open(path.Join(s.dir, fileName(ref)))
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Save writes a whole snapshot durably (Create, Write, Commit).
func (s *Store) Save(snap raft.Snapshot) error {
	w, err := s.Create(snap.Meta)
	if err != nil {
		return err
	}
	if _, err := w.Write(snap.Data); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

// Load reads the whole snapshot ref into memory.
func (s *Store) Load(ref Ref) (raft.Snapshot, error) {
	r, err := s.Open(ref)
	if err != nil {
		return raft.Snapshot{}, err
	}
	defer r.Close()
	data := make([]byte, r.Size())
	if _, err := r.ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && r.Size() == 0) {
		return raft.Snapshot{}, fmt.Errorf("read snapshot %s: %w", fileName(ref), err)
	}
	return raft.Snapshot{Meta: r.Meta(), Data: data}, nil
}

// encodeMeta encodes m in the current (version 2) metadata format.
func encodeMeta(m raft.SnapshotMeta) []byte {
	cs := &m.ConfState
	lists := [][]uint64{cs.Voters, cs.Learners, cs.VotersOutgoing, cs.LearnersNext}
	n := 17 + 4 + 16*len(cs.Incarnations) + 4 + 8*len(cs.AutoPromote)
	for _, l := range lists {
		n += 4 + 8*len(l)
	}
	b := make([]byte, 0, n)
	b = binary.LittleEndian.AppendUint64(b, m.Index)
	b = binary.LittleEndian.AppendUint64(b, m.Term)
	if cs.AutoLeave {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for _, l := range lists {
		b = appendIDs(b, l)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(cs.Incarnations)))
	for _, mi := range cs.Incarnations {
		b = binary.LittleEndian.AppendUint64(b, mi.ID)
		b = binary.LittleEndian.AppendUint64(b, mi.Incarnation)
	}
	return appendIDs(b, cs.AutoPromote)
}

func appendIDs(b []byte, ids []uint64) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ids)))
	for _, id := range ids {
		b = binary.LittleEndian.AppendUint64(b, id)
	}
	return b
}

// decodeMeta decodes metadata of the given format version (1 or 2).
func decodeMeta(b []byte, version byte) (raft.SnapshotMeta, error) {
	if len(b) < 17 {
		return raft.SnapshotMeta{}, fmt.Errorf("%w: metadata of %d bytes", ErrCorrupt, len(b))
	}
	m := raft.SnapshotMeta{Index: binary.LittleEndian.Uint64(b), Term: binary.LittleEndian.Uint64(b[8:])}
	cs := &m.ConfState
	cs.AutoLeave = b[16] == 1
	b = b[17:]
	var err error
	for _, l := range []*[]uint64{&cs.Voters, &cs.Learners, &cs.VotersOutgoing, &cs.LearnersNext} {
		if *l, b, err = readIDs(b); err != nil {
			return raft.SnapshotMeta{}, err
		}
	}
	if version >= 2 {
		var pairs []uint64
		if pairs, b, err = readList(b, 2); err != nil {
			return raft.SnapshotMeta{}, err
		}
		for k := 0; k+1 < len(pairs); k += 2 {
			cs.Incarnations = append(cs.Incarnations, raft.MemberIncarnation{ID: pairs[k], Incarnation: pairs[k+1]})
		}
		if cs.AutoPromote, b, err = readIDs(b); err != nil {
			return raft.SnapshotMeta{}, err
		}
	}
	if len(b) != 0 {
		return raft.SnapshotMeta{}, fmt.Errorf("%w: %d stray metadata bytes", ErrCorrupt, len(b))
	}
	return m, nil
}

func readIDs(b []byte) ([]uint64, []byte, error) { return readList(b, 1) }

// readList reads a uint32 count of items of width uint64s each; nil if
// the count is zero.
func readList(b []byte, width int) ([]uint64, []byte, error) {
	if len(b) < 4 {
		return nil, nil, fmt.Errorf("%w: metadata truncated", ErrCorrupt)
	}
	n := uint64(binary.LittleEndian.Uint32(b)) * uint64(width)
	b = b[4:]
	// Bound the count by the bytes present before allocating.
	if n*8 > uint64(len(b)) {
		return nil, nil, fmt.Errorf("%w: metadata list of %d values in %d bytes", ErrCorrupt, n, len(b))
	}
	if n == 0 {
		return nil, b, nil
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out, b[8*n:], nil
}

// Writer receives a snapshot's data in chunks into a temporary file. Nothing
// is visible until Commit returns. Each Writer has its own temporary file,
// so two writers of the same snapshot do not collide.
type Writer struct {
	s    *Store
	meta raft.SnapshotMeta
	f    vfs.File
	tmp  string
	off  int64
	n    uint64
	crc  uint32
	done bool
}

// Create starts writing the snapshot described by meta.
func (s *Store) Create(meta raft.SnapshotMeta) (*Writer, error) {
	ref := Ref{Index: meta.Index, Term: meta.Term}
	tmp := path.Join(s.dir, fmt.Sprintf("%s.%d%s", strings.TrimSuffix(fileName(ref), suffix), s.tmpSeq.Add(1), tmpSuffix))
	f, err := s.fs.Create(tmp)
	if err != nil {
		return nil, fmt.Errorf("create snapshot %s: %w", tmp, err)
	}
	mb := encodeMeta(meta)
	hdr := make([]byte, 0, len(magic)+8+len(mb))
	hdr = append(hdr, magic...)
	hdr = binary.LittleEndian.AppendUint32(hdr, uint32(len(mb)))
	hdr = binary.LittleEndian.AppendUint32(hdr, crc32.Checksum(mb, crcTable))
	hdr = append(hdr, mb...)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		f.Close()
		s.fs.Remove(tmp)
		return nil, fmt.Errorf("write snapshot header %s: %w", tmp, err)
	}
	return &Writer{s: s, meta: meta, f: f, tmp: tmp, off: int64(len(hdr))}, nil
}

// Write appends a chunk of snapshot data.
func (w *Writer) Write(p []byte) (int, error) {
	if w.done {
		return 0, errors.New("snap: write after commit or abort")
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	w.n += uint64(n)
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	if err != nil {
		return n, fmt.Errorf("write snapshot %s at offset %d: %w", w.tmp, w.off, err)
	}
	return n, nil
}

// Meta returns the metadata of the snapshot being written.
func (w *Writer) Meta() raft.SnapshotMeta { return w.meta }

// Size returns the number of data bytes written so far.
func (w *Writer) Size() uint64 { return w.n }

// Checksum returns the CRC-32C (Castagnoli) of the data written so far.
func (w *Writer) Checksum() uint32 { return w.crc }

// Commit makes the snapshot durable under its final name and applies the
// retention policy. After a nil return the snapshot survives a crash.
func (w *Writer) Commit() error {
	if w.done {
		return errors.New("snap: commit after commit or abort")
	}
	w.done = true
	tr := make([]byte, 0, trailerSize)
	tr = binary.LittleEndian.AppendUint64(tr, w.n)
	tr = binary.LittleEndian.AppendUint32(tr, w.crc)
	tr = append(tr, trailMagic...)
	fail := func(format string, err error) error {
		w.f.Close()
		w.s.fs.Remove(w.tmp)
		return fmt.Errorf(format, w.tmp, err)
	}
	if _, err := w.f.WriteAt(tr, w.off); err != nil {
		return fail("write snapshot trailer %s: %w", err)
	}
	if err := w.f.Sync(); err != nil {
		return fail("sync snapshot %s: %w", err)
	}
	if err := w.f.Close(); err != nil {
		w.s.fs.Remove(w.tmp)
		return fmt.Errorf("close snapshot %s: %w", w.tmp, err)
	}
	final := path.Join(w.s.dir, fileName(Ref{Index: w.meta.Index, Term: w.meta.Term}))
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.s.fs.Rename(w.tmp, final); err != nil {
		w.s.fs.Remove(w.tmp)
		return fmt.Errorf("rename snapshot %s: %w", final, err)
	}
	if err := w.s.fs.SyncDir(w.s.dir); err != nil {
		return fmt.Errorf("sync snapshot dir %s: %w", w.s.dir, err)
	}
	return w.s.retain()
}

// Abort discards the partial snapshot.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	if err := w.s.fs.Remove(w.tmp); err != nil {
		return fmt.Errorf("remove partial snapshot %s: %w", w.tmp, err)
	}
	return nil
}

// retain deletes all but the newest keep snapshots. Called with mu held.
func (s *Store) retain() error {
	refs, err := s.List()
	if err != nil {
		return err
	}
	if len(refs) <= s.keep {
		return nil
	}
	for _, r := range refs[s.keep:] {
		p := path.Join(s.dir, fileName(r))
		if err := s.fs.Remove(p); err != nil {
			return fmt.Errorf("remove old snapshot %s: %w", p, err)
		}
	}
	if err := s.fs.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sync snapshot dir %s: %w", s.dir, err)
	}
	return nil
}

// Reader streams a verified snapshot's data.
type Reader struct {
	meta raft.SnapshotMeta
	f    vfs.File
	data *io.SectionReader
	sum  uint32 // CRC-32C of the data, as verified
}

// Open opens snapshot ref and verifies its metadata and data checksums by
// streaming through the file (constant memory). Errors wrap ErrCorrupt for
// a damaged file and ErrNotFound for a missing one.
func (s *Store) Open(ref Ref) (*Reader, error) {
	p := path.Join(s.dir, fileName(ref))
	f, err := s.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open snapshot %s: %w (%v)", p, ErrNotFound, err)
	}
	r, err := verify(f, ref, &s.read)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read snapshot %s: %w", p, err)
	}
	return r, nil
}

func verify(f vfs.File, ref Ref, read *atomic.Int64) (*Reader, error) {
	l, err := layout(f, ref, read)
	if err != nil {
		return nil, err
	}
	h := crc32.New(crcTable)
	n, err := io.Copy(h, io.NewSectionReader(f, l.dataOff, l.dataLen))
	read.Add(n)
	if err != nil {
		return nil, err
	}
	sum := h.Sum32()
	if sum != l.sum {
		return nil, fmt.Errorf("%w: data checksum mismatch (%d bytes from offset %d)", ErrCorrupt, l.dataLen, l.dataOff)
	}
	return &Reader{meta: l.meta, f: f, data: io.NewSectionReader(f, l.dataOff, l.dataLen), sum: sum}, nil
}

// fileLayout is what a snapshot file's header, metadata and trailer say.
type fileLayout struct {
	meta             raft.SnapshotMeta
	dataOff, dataLen int64
	sum              uint32 // the data's CRC-32C, as the trailer records it
}

// layout reads and checks a snapshot file's header, metadata and trailer,
// but not its data.
func layout(f vfs.File, ref Ref, read *atomic.Int64) (fileLayout, error) {
	size, err := f.Size()
	if err != nil {
		return fileLayout{}, err
	}
	hdr := make([]byte, len(magic)+8)
	if size < int64(len(hdr)+trailerSize) {
		return fileLayout{}, fmt.Errorf("%w: file of %d bytes is too short", ErrCorrupt, size)
	}
	if _, err := f.ReadAt(hdr, 0); err != nil {
		return fileLayout{}, err
	}
	version := hdr[len(magic)-1]
	if string(hdr[:len(magicPrefix)]) != magicPrefix || version < 1 || version > 2 {
		return fileLayout{}, fmt.Errorf("%w: bad magic at offset 0", ErrCorrupt)
	}
	mlen := binary.LittleEndian.Uint32(hdr[len(magic):])
	mcrc := binary.LittleEndian.Uint32(hdr[len(magic)+4:])
	if mlen > maxMetaSize || int64(len(hdr))+int64(mlen)+trailerSize > size {
		return fileLayout{}, fmt.Errorf("%w: metadata length %d at offset %d", ErrCorrupt, mlen, len(magic))
	}
	mb := make([]byte, mlen)
	if _, err := f.ReadAt(mb, int64(len(hdr))); err != nil {
		return fileLayout{}, err
	}
	if crc32.Checksum(mb, crcTable) != mcrc {
		return fileLayout{}, fmt.Errorf("%w: metadata checksum mismatch at offset %d", ErrCorrupt, len(hdr))
	}
	meta, err := decodeMeta(mb, version)
	if err != nil {
		return fileLayout{}, err
	}
	if meta.Index != ref.Index || meta.Term != ref.Term {
		return fileLayout{}, fmt.Errorf("%w: file holds snapshot %d/%d, name says %d/%d", ErrCorrupt, meta.Index, meta.Term, ref.Index, ref.Term)
	}
	dataOff := int64(len(hdr)) + int64(mlen)
	dataLen := size - trailerSize - dataOff
	tr := make([]byte, trailerSize)
	if _, err := f.ReadAt(tr, size-trailerSize); err != nil {
		return fileLayout{}, err
	}
	read.Add(int64(len(hdr) + len(mb) + len(tr)))
	if string(tr[12:]) != trailMagic || binary.LittleEndian.Uint64(tr) != uint64(dataLen) {
		return fileLayout{}, fmt.Errorf("%w: bad trailer at offset %d (incomplete write?)", ErrCorrupt, size-trailerSize)
	}
	return fileLayout{meta: meta, dataOff: dataOff, dataLen: dataLen, sum: binary.LittleEndian.Uint32(tr[8:])}, nil
}

// Meta returns the snapshot's metadata.
func (r *Reader) Meta() raft.SnapshotMeta { return r.meta }

// Size returns the length of the snapshot data in bytes.
func (r *Reader) Size() int64 { return r.data.Size() }

// Checksum returns the CRC-32C (Castagnoli) of the snapshot data, as
// verified when the reader was opened.
func (r *Reader) Checksum() uint32 { return r.sum }

// Read reads the next chunk of data (io.Reader).
func (r *Reader) Read(p []byte) (int, error) { return r.data.Read(p) }

// ReadAt reads data at an offset, for resumable chunked transfer (io.ReaderAt).
func (r *Reader) ReadAt(p []byte, off int64) (int, error) { return r.data.ReadAt(p, off) }

// Close releases the file.
func (r *Reader) Close() error { return r.f.Close() }

// Stream reads one snapshot's data from start to end, checking it on the
// way: opening it checks the file's header, metadata and trailer, and the
// data is checked against the trailer's checksum as the read reaches its
// end. So each byte is read once, where Open reads the file twice (once
// to verify, once to serve). A Read that reaches the end of data that
// does not match fails with an error wrapping ErrCorrupt instead of
// returning io.EOF, so a reader that acts only on a complete stream (a
// state machine's Restore, a follower's receiver) never acts on damaged
// data.
type Stream struct {
	meta raft.SnapshotMeta
	f    vfs.File
	data *io.SectionReader
	want uint32 // the trailer's checksum
	crc  uint32 // of the data read so far
	read *atomic.Int64
	name string
}

// Stream opens snapshot ref for one sequential read. Errors wrap ErrCorrupt
// for a damaged header, metadata or trailer and ErrNotFound for a missing
// file.
func (s *Store) Stream(ref Ref) (*Stream, error) {
	p := path.Join(s.dir, fileName(ref))
	f, err := s.fs.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open snapshot %s: %w (%v)", p, ErrNotFound, err)
	}
	l, err := layout(f, ref, &s.read)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("read snapshot %s: %w", p, err)
	}
	return &Stream{meta: l.meta, f: f, data: io.NewSectionReader(f, l.dataOff, l.dataLen), want: l.sum, read: &s.read, name: p}, nil
}

// Meta returns the snapshot's metadata.
func (r *Stream) Meta() raft.SnapshotMeta { return r.meta }

// Size returns the length of the snapshot data in bytes.
func (r *Stream) Size() int64 { return r.data.Size() }

// Checksum returns the CRC-32C (Castagnoli) the file records for its data
// (what reading it to the end checks).
func (r *Stream) Checksum() uint32 { return r.want }

// Read reads the next bytes of data (io.Reader). At the end it returns
// io.EOF if the data matched its checksum, and an error wrapping
// ErrCorrupt if not.
func (r *Stream) Read(p []byte) (int, error) {
	n, err := r.data.Read(p)
	r.crc = crc32.Update(r.crc, crcTable, p[:n])
	r.read.Add(int64(n))
	if err == io.EOF && r.crc != r.want {
		return n, fmt.Errorf("read snapshot %s: %w: data checksum mismatch (%d bytes)", r.name, ErrCorrupt, r.data.Size())
	}
	return n, err
}

// Close releases the file.
func (r *Stream) Close() error { return r.f.Close() }
