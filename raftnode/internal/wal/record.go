package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/capraft/capraft/raftnode/raft"
)

// Record framing (little endian):
//
//	length uint32 | type uint8 | hcrc uint32 | crc uint32 | payload [length]byte
//
// hcrc is the CRC32C (Castagnoli, hardware accelerated) of length and type;
// crc covers length, type and payload. The separate header checksum is what
// lets recovery tell a torn tail from corruption: once the header checks out,
// a record that runs past the end of the file really was cut short by a
// crash, whereas a damaged length field is caught instead of being trusted to
// swallow (and truncate away) the rest of the segment.
const headerSize = 13

// RecordType says what a record's payload holds.
type RecordType uint8

// Record types. Zero is invalid so that a zero-filled region (what some file
// systems show for an extended-but-unwritten tail after a crash) never decodes.
const (
	// TypeSegment opens every segment: format version, sequence number, the
	// index/term of the entry just before the segment's first entry, and the
	// hard state at the moment the segment was created. It makes each segment
	// self-describing, so older segments can be deleted after compaction.
	TypeSegment RecordType = 1
	// TypeEntry is one log entry. An entry at index i <= the last index
	// replaces the log from i on (a follower overwriting a conflicting suffix).
	TypeEntry RecordType = 2
	// TypeHardState is the Raft hard state (term, vote, commit).
	TypeHardState RecordType = 3
	// TypeSnapshot records that a snapshot at (index, term) is durable: if the
	// log holds that entry the log is kept, otherwise it is discarded and
	// restarts after the snapshot (Raft paper, InstallSnapshot rule 6-7).
	TypeSnapshot RecordType = 4
	// TypeTruncate ends the log at an entry (index, term): the entries
	// after it are dropped. Only a repair writes it (see Options.Repair),
	// and only in data directories of storage format 2, which builds that
	// do not know it refuse to open.
	TypeTruncate RecordType = 5
)

// DefaultMaxRecordSize caps a record's payload. A length above the cap is
// treated as corruption, so a damaged length field can never make recovery
// allocate gigabytes.
const DefaultMaxRecordSize = 64 << 20

// formatVersion is written in every segment header.
const formatVersion = 1

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var (
	// ErrShortRecord means the buffer ends inside a record: at the end of
	// the last segment this is a torn write.
	ErrShortRecord = errors.New("wal: record extends past end of data")
	// ErrCorruptRecord means the record fails its checksum or is malformed.
	ErrCorruptRecord = errors.New("wal: corrupt record")
	// errHeaderCRC is the ErrCorruptRecord case where the frame header
	// itself fails its checksum (garbage or zeros where a record should start).
	errHeaderCRC = fmt.Errorf("%w: header checksum mismatch", ErrCorruptRecord)
	// errPayloadCRC: the header is sound but the payload fails its checksum.
	errPayloadCRC = fmt.Errorf("%w: payload checksum mismatch", ErrCorruptRecord)
)

// Record is one decoded WAL record. Only the fields of its Type are set.
type Record struct {
	Type  RecordType
	Entry raft.Entry     // TypeEntry
	Hard  raft.HardState // TypeHardState and TypeSegment
	Seg   SegmentHeader  // TypeSegment
	Snap  SnapRef        // TypeSnapshot
	End   SnapRef        // TypeTruncate
}

// SegmentHeader is the payload of a TypeSegment record.
type SegmentHeader struct {
	Version   uint32
	Seq       uint64
	PrevIndex uint64 // index of the entry before this segment's first entry
	PrevTerm  uint64
}

// SnapRef names a durable snapshot by its last included index and term.
type SnapRef struct {
	Index uint64
	Term  uint64
}

const (
	entryFixed = 17 // index, term, type
	hardSize   = 24
	segSize    = 4 + 8*3 + hardSize
	snapSize   = 16
)

// appendRecord appends one framed record to buf.
func appendRecord(buf []byte, t RecordType, payloadLen int, fill func(p []byte)) []byte {
	start := len(buf)
	need := headerSize + payloadLen
	if cap(buf)-len(buf) < need {
		nb := make([]byte, len(buf), 2*cap(buf)+need)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:start+need]
	h := buf[start : start+headerSize]
	binary.LittleEndian.PutUint32(h[0:], uint32(payloadLen))
	h[4] = byte(t)
	hcrc := crc32.Checksum(h[:5], crcTable)
	binary.LittleEndian.PutUint32(h[5:], hcrc)
	fill(buf[start+headerSize:])
	binary.LittleEndian.PutUint32(h[9:], crc32.Update(hcrc, crcTable, buf[start+headerSize:]))
	return buf
}

func putHard(p []byte, hs raft.HardState) {
	binary.LittleEndian.PutUint64(p[0:], hs.Term)
	binary.LittleEndian.PutUint64(p[8:], hs.Vote)
	binary.LittleEndian.PutUint64(p[16:], hs.Commit)
}

func getHard(p []byte) raft.HardState {
	return raft.HardState{
		Term:   binary.LittleEndian.Uint64(p[0:]),
		Vote:   binary.LittleEndian.Uint64(p[8:]),
		Commit: binary.LittleEndian.Uint64(p[16:]),
	}
}

// AppendEntry appends an entry record to buf. It is the hot path of every
// append, so it is written out rather than going through appendRecord's
// closure.
func AppendEntry(buf []byte, e raft.Entry) []byte {
	n := entryFixed + len(e.Data)
	start := len(buf)
	if cap(buf)-start < headerSize+n {
		nb := make([]byte, start, 2*cap(buf)+headerSize+n)
		copy(nb, buf)
		buf = nb
	}
	buf = buf[:start+headerSize+n]
	h := buf[start : start+headerSize]
	binary.LittleEndian.PutUint32(h[0:], uint32(n))
	h[4] = byte(TypeEntry)
	hcrc := crc32.Checksum(h[:5], crcTable)
	binary.LittleEndian.PutUint32(h[5:], hcrc)
	p := buf[start+headerSize:]
	binary.LittleEndian.PutUint64(p[0:], e.Index)
	binary.LittleEndian.PutUint64(p[8:], e.Term)
	p[16] = byte(e.Type)
	copy(p[entryFixed:], e.Data)
	binary.LittleEndian.PutUint32(h[9:], crc32.Update(hcrc, crcTable, p))
	return buf
}

// AppendHardState appends a hard-state record to buf.
func AppendHardState(buf []byte, hs raft.HardState) []byte {
	return appendRecord(buf, TypeHardState, hardSize, func(p []byte) { putHard(p, hs) })
}

// AppendSnapshot appends a snapshot-reference record to buf.
func AppendSnapshot(buf []byte, s SnapRef) []byte {
	return appendRecord(buf, TypeSnapshot, snapSize, func(p []byte) {
		binary.LittleEndian.PutUint64(p[0:], s.Index)
		binary.LittleEndian.PutUint64(p[8:], s.Term)
	})
}

// AppendTruncate appends a truncation record (the log ends at end) to buf.
func AppendTruncate(buf []byte, end SnapRef) []byte {
	return appendRecord(buf, TypeTruncate, snapSize, func(p []byte) {
		binary.LittleEndian.PutUint64(p[0:], end.Index)
		binary.LittleEndian.PutUint64(p[8:], end.Term)
	})
}

// AppendSegmentHeader appends a segment-header record to buf.
func AppendSegmentHeader(buf []byte, h SegmentHeader, hs raft.HardState) []byte {
	return appendRecord(buf, TypeSegment, segSize, func(p []byte) {
		binary.LittleEndian.PutUint32(p[0:], h.Version)
		binary.LittleEndian.PutUint64(p[4:], h.Seq)
		binary.LittleEndian.PutUint64(p[12:], h.PrevIndex)
		binary.LittleEndian.PutUint64(p[20:], h.PrevTerm)
		putHard(p[28:], hs)
	})
}

// parseHeader validates a frame header (its own checksum, length cap, type)
// and returns payload length and type. The payload CRC is checked later.
func parseHeader(h []byte, maxSize uint32) (uint32, RecordType, error) {
	if crc32.Checksum(h[:5], crcTable) != binary.LittleEndian.Uint32(h[5:]) {
		return 0, 0, errHeaderCRC
	}
	n := binary.LittleEndian.Uint32(h[0:])
	t := RecordType(h[4])
	if n > maxSize {
		return 0, 0, fmt.Errorf("%w: length %d exceeds limit %d", ErrCorruptRecord, n, maxSize)
	}
	if t < TypeSegment || t > TypeTruncate {
		return 0, 0, fmt.Errorf("%w: unknown type %d", ErrCorruptRecord, t)
	}
	return n, t, nil
}

// DecodeRecord decodes the record at the start of buf. It returns the record
// and the number of bytes it occupies. It returns ErrShortRecord (wrapped) if
// buf ends inside the record and ErrCorruptRecord (wrapped) if the record is
// damaged. Entry data aliases buf. It never allocates more than the record's
// fixed fields and never panics, whatever buf holds.
func DecodeRecord(buf []byte, maxSize uint32) (Record, int, error) {
	if len(buf) < headerSize {
		return Record{}, 0, ErrShortRecord
	}
	n, t, err := parseHeader(buf[:headerSize], maxSize)
	if err != nil {
		return Record{}, 0, err
	}
	total := headerSize + int(n)
	if len(buf) < total {
		return Record{}, 0, ErrShortRecord
	}
	hcrc := binary.LittleEndian.Uint32(buf[5:])
	if crc32.Update(hcrc, crcTable, buf[headerSize:total]) != binary.LittleEndian.Uint32(buf[9:]) {
		return Record{}, 0, errPayloadCRC
	}
	rec, err := decodePayload(t, buf[headerSize:total])
	return rec, total, err
}

func decodePayload(t RecordType, p []byte) (Record, error) {
	rec := Record{Type: t}
	bad := func(want int) error {
		return fmt.Errorf("%w: type %d payload is %d bytes, want %d", ErrCorruptRecord, t, len(p), want)
	}
	switch t {
	case TypeEntry:
		if len(p) < entryFixed {
			return Record{}, bad(entryFixed)
		}
		rec.Entry = raft.Entry{
			Index: binary.LittleEndian.Uint64(p[0:]),
			Term:  binary.LittleEndian.Uint64(p[8:]),
			Type:  raft.EntryType(p[16]),
			Data:  p[entryFixed:],
		}
	case TypeHardState:
		if len(p) != hardSize {
			return Record{}, bad(hardSize)
		}
		rec.Hard = getHard(p)
	case TypeSnapshot, TypeTruncate:
		if len(p) != snapSize {
			return Record{}, bad(snapSize)
		}
		ref := SnapRef{Index: binary.LittleEndian.Uint64(p[0:]), Term: binary.LittleEndian.Uint64(p[8:])}
		if t == TypeSnapshot {
			rec.Snap = ref
		} else {
			rec.End = ref
		}
	case TypeSegment:
		if len(p) != segSize {
			return Record{}, bad(segSize)
		}
		rec.Seg = SegmentHeader{
			Version:   binary.LittleEndian.Uint32(p[0:]),
			Seq:       binary.LittleEndian.Uint64(p[4:]),
			PrevIndex: binary.LittleEndian.Uint64(p[12:]),
			PrevTerm:  binary.LittleEndian.Uint64(p[20:]),
		}
		rec.Hard = getHard(p[28:])
	}
	return rec, nil
}
