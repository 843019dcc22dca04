package storage

import (
	"fmt"
	"testing"

	"github.com/capraft/capraft/raftnode/storage/crashfs"
	"github.com/capraft/capraft/raftnode/storage/wal"
)

func dumpWAL(t *testing.T, fs *crashfs.FS, dir string) {
	names, _ := fs.List(dir)
	for _, n := range names {
		b, _ := fs.ReadFile(dir + "/" + n)
		off := 0
		s := n + ":"
		for off < len(b) {
			rec, k, err := wal.DecodeRecord(b[off:], 1<<30)
			if err != nil {
				s += fmt.Sprintf(" ERR(%v)", err)
				break
			}
			switch rec.Type {
			case wal.TypeSegment:
				s += fmt.Sprintf(" H(prev=%d/%d hs=%v)", rec.Seg.PrevIndex, rec.Seg.PrevTerm, rec.Hard)
			case wal.TypeEntry:
				s += fmt.Sprintf(" E%d/%d", rec.Entry.Index, rec.Entry.Term)
			case wal.TypeHardState:
				s += fmt.Sprintf(" HS%v", rec.Hard)
			case wal.TypeSnapshot:
				s += fmt.Sprintf(" S%d/%d", rec.Snap.Index, rec.Snap.Term)
			}
			off += k
		}
		t.Log(s)
	}
}
