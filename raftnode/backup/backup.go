// Package backup is the file format of capraft backups, and the checks
// that describe one: `raftctl snapshot save` writes a backup from a
// node's snapshot (Admin.saveSnapshot), `raftctl snapshot status`
// verifies and describes it, and `raftnode restore` seeds a new cluster's
// data directories from it (raftnode.Restore).
//
// A backup is a node's snapshot data (the node's envelope of member
// addresses, then the state machine's stream: see raftnode/driver's
// snapshot.go) after a header that says where it came from:
//
//	magic "CRBACKUP" | version u8 | header length u32 LE | header (JSON) |
//	CRC-32C of the header u32 LE | data (header.size bytes)
//
// The header records the data's size and CRC-32C (Castagnoli) as the node
// stored them, so a backup checks end to end: from the node's disk,
// through the network and the backup's own storage, to the restore.
// Nothing follows the data.
package backup

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"time"

	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/kv"
)

const (
	magic   = "CRBACKUP"
	version = 1
	// maxHeader bounds the header: a configuration of thousands of
	// members still fits.
	maxHeader = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDamaged is wrapped by the errors about a backup that fails a check
// (truncated, bit-flipped, not a backup at all).
var ErrDamaged = errors.New("damaged backup")

// Header says where a backup's data came from.
type Header struct {
	// ClusterID is the id of the cluster the backup was taken from (a
	// hash of its name: raftnode.ClusterID).
	ClusterID uint64 `json:"cluster_id"`
	// NodeID is the node that sent it, Version that node's build.
	NodeID  uint64 `json:"node_id"`
	Version string `json:"version,omitempty"`
	// Index and Term name the snapshot: its last included log entry.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
	// Voters and Learners are the configuration at Index.
	Voters   []uint64 `json:"voters"`
	Learners []uint64 `json:"learners,omitempty"`
	// Size is the data's length in bytes, Checksum its CRC-32C.
	Size     uint64 `json:"size"`
	Checksum uint32 `json:"checksum"`
	// Created is when the node began sending it.
	Created time.Time `json:"created"`
}

// WriteHeader writes a backup's header to w; the data follows it.
func WriteHeader(w io.Writer, h Header) error {
	js, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("encode backup header: %w", err)
	}
	b := make([]byte, 0, len(magic)+1+4+len(js)+4)
	b = append(b, magic...)
	b = append(b, version)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(js)))
	b = append(b, js...)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(js, castagnoli))
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write backup header: %w", err)
	}
	return nil
}

// damaged returns an error wrapping ErrDamaged.
func damaged(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrDamaged, fmt.Sprintf(format, args...))
}

// ReadHeader reads and checks a backup's header from r, which is left at
// the start of the data.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [len(magic) + 1 + 4]byte
	if n, err := io.ReadFull(r, pre[:]); err != nil {
		switch {
		case err != io.EOF && err != io.ErrUnexpectedEOF:
			return Header{}, fmt.Errorf("read backup header: %w", err)
		case n == 0:
			return Header{}, damaged("the file is empty")
		case string(pre[:min(n, len(magic))]) != magic[:min(n, len(magic))]:
			return Header{}, damaged("not a capraft backup (it does not start with %q)", magic)
		}
		return Header{}, damaged("truncated: the file ends after %d bytes, inside its header", n)
	}
	if string(pre[:len(magic)]) != magic {
		return Header{}, damaged("not a capraft backup (it does not start with %q)", magic)
	}
	if v := pre[len(magic)]; v != version {
		return Header{}, fmt.Errorf("backup format version %d is not supported (this build reads version %d): use a newer raftctl", v, version)
	}
	hlen := binary.LittleEndian.Uint32(pre[len(magic)+1:])
	if hlen == 0 || hlen > maxHeader {
		return Header{}, damaged("header length %d is out of range (1 to %d)", hlen, maxHeader)
	}
	buf := make([]byte, hlen+4)
	if n, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return Header{}, damaged("truncated: the file ends %d bytes into its %d-byte header", n, hlen+4)
		}
		return Header{}, fmt.Errorf("read backup header: %w", err)
	}
	js := buf[:hlen]
	if got, want := crc32.Checksum(js, castagnoli), binary.LittleEndian.Uint32(buf[hlen:]); got != want {
		return Header{}, damaged("the header's CRC-32C is %08x, it records %08x (the header is damaged)", got, want)
	}
	var h Header
	if err := json.Unmarshal(js, &h); err != nil {
		return Header{}, damaged("the header does not decode: %v", err)
	}
	if h.Index == 0 || len(h.Voters) == 0 {
		return Header{}, damaged("the header names no snapshot (index %d, %d voters)", h.Index, len(h.Voters))
	}
	return h, nil
}

// Member is a member of the backed-up cluster's configuration.
type Member struct {
	ID uint64 `json:"id"`
	// Address is where the old cluster reached it (a restore does not
	// keep it: the new cluster's members come from --peers).
	Address string `json:"address"`
	Learner bool   `json:"learner,omitempty"`
}

// Summary describes a backup that passed every check.
type Summary struct {
	Header
	// Members is the configuration at the snapshot's index, with the
	// addresses the snapshot records.
	Members []Member
	// KV describes the key-value state: revision, keys, sessions.
	KV kv.SnapshotSummary
	// FileSize is the backup file's size in bytes.
	FileSize int64
}

// crcReader counts and checksums what is read through it.
type crcReader struct {
	r   io.Reader
	n   uint64
	crc uint32
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	return n, err
}

// Verify reads a whole backup from r, once, and checks it: the header,
// the data's size and CRC-32C against the header, the node's envelope
// and the state machine's stream (as a restore would decode them), and
// that nothing follows. Memory stays bounded by the largest key or value.
// Errors wrap ErrDamaged and say what is wrong.
func Verify(r io.Reader) (Summary, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	h, err := ReadHeader(br)
	if err != nil {
		return Summary{}, err
	}
	data := &crcReader{r: io.LimitReader(br, int64(h.Size))}
	addrs, sm, derr := driver.ReadSnapshotEnvelope(data)
	var kvs kv.SnapshotSummary
	if derr == nil {
		kvs, derr = kv.SummarizeSnapshot(sm)
	}
	// Read whatever the decoders left, so that size and checksum speak
	// first: they say more precisely what went wrong than a decoder that
	// tripped over a flipped bit.
	if _, err := io.Copy(io.Discard, data); err != nil {
		return Summary{}, fmt.Errorf("read backup data: %w", err)
	}
	if data.n < h.Size {
		return Summary{}, damaged("truncated: the file holds %d of the %d bytes of snapshot data (an interrupted copy?)", data.n, h.Size)
	}
	if extra, err := io.Copy(io.Discard, br); err != nil {
		return Summary{}, fmt.Errorf("read backup data: %w", err)
	} else if extra > 0 {
		return Summary{}, damaged("%d bytes follow the %d bytes of snapshot data the header announces", extra, h.Size)
	}
	if data.crc != h.Checksum {
		return Summary{}, damaged("the snapshot data's CRC-32C is %08x, the header records %08x (bit rot or a bad copy)", data.crc, h.Checksum)
	}
	if derr != nil {
		return Summary{}, damaged("the snapshot data does not decode, though its checksum matches (a bug in the node that wrote it?): %v", derr)
	}
	if kvs.Applied > h.Index {
		return Summary{}, damaged("the state was applied through index %d, beyond the snapshot's index %d", kvs.Applied, h.Index)
	}
	sum := Summary{Header: h, KV: kvs}
	for _, id := range h.Voters {
		sum.Members = append(sum.Members, Member{ID: id, Address: addrs[id]})
	}
	for _, id := range h.Learners {
		sum.Members = append(sum.Members, Member{ID: id, Address: addrs[id], Learner: true})
	}
	slices.SortFunc(sum.Members, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return sum, nil
}

// VerifyFile verifies the backup at path (see Verify).
func VerifyFile(path string) (Summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return Summary{}, err
	}
	defer f.Close()
	sum, err := Verify(f)
	if err != nil {
		return Summary{}, fmt.Errorf("%s: %w", path, err)
	}
	if fi, err := f.Stat(); err == nil {
		sum.FileSize = fi.Size()
	}
	return sum, nil
}

// Data opens a backup's data for a restore: it checks the header and
// returns it with a reader of the data, the node's envelope included.
// The reader fails its last Read with an error wrapping ErrDamaged,
// instead of io.EOF, if the data is short or does not match the header's
// checksum, so a restore never commits damaged data. Verify the backup
// first to find out what is wrong before anything is written.
func Data(r io.Reader) (Header, io.Reader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	h, err := ReadHeader(br)
	if err != nil {
		return Header{}, nil, err
	}
	return h, &checkedData{h: h, br: br, c: crcReader{r: io.LimitReader(br, int64(h.Size))}}, nil
}

// checkedData reads a backup's data, checking it at the end.
type checkedData struct {
	h  Header
	br *bufio.Reader
	c  crcReader
}

func (d *checkedData) Read(p []byte) (int, error) {
	n, err := d.c.Read(p)
	if err != io.EOF {
		return n, err
	}
	switch {
	case d.c.n < d.h.Size:
		return n, damaged("truncated: %d of the %d bytes of snapshot data", d.c.n, d.h.Size)
	case d.c.crc != d.h.Checksum:
		return n, damaged("the snapshot data's CRC-32C is %08x, the header records %08x", d.c.crc, d.h.Checksum)
	}
	if _, perr := d.br.Peek(1); perr == nil {
		return n, damaged("data follows the %d bytes of snapshot data the header announces", d.h.Size)
	}
	return n, io.EOF
}
