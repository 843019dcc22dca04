package storage

import (
	"fmt"
	"strings"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/wal"
)

// dumpWAL renders every segment in dir as a list of records, for failure
// messages: H = segment header, E = entry index/term, HS = hard state,
// S = snapshot reference, T = truncation.
func dumpWAL(fs *crashfs.FS, dir string) string {
	var out strings.Builder
	names, _ := fs.List(dir)
	for _, n := range names {
		b, _ := fs.ReadFile(dir + "/" + n)
		fmt.Fprintf(&out, "\n  %s:", n)
		for off := 0; off < len(b); {
			rec, k, err := wal.DecodeRecord(b[off:], 1<<30)
			if err != nil {
				fmt.Fprintf(&out, " [stop at %d: %v]", off, err)
				break
			}
			switch rec.Type {
			case wal.TypeSegment:
				fmt.Fprintf(&out, " H(prev=%d/%d)", rec.Seg.PrevIndex, rec.Seg.PrevTerm)
			case wal.TypeEntry:
				fmt.Fprintf(&out, " E%d/%d", rec.Entry.Index, rec.Entry.Term)
			case wal.TypeHardState:
				fmt.Fprintf(&out, " HS%v", rec.Hard)
			case wal.TypeSnapshot:
				fmt.Fprintf(&out, " S%d/%d", rec.Snap.Index, rec.Snap.Term)
			case wal.TypeTruncate:
				fmt.Fprintf(&out, " T%d/%d", rec.End.Index, rec.End.Term)
			}
			off += k
		}
	}
	return out.String()
}
