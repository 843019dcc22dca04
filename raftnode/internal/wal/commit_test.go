package wal

import (
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/capraft/capraft/raftnode/internal/crashfs"
	"github.com/capraft/capraft/raftnode/internal/vfs"
	"github.com/capraft/capraft/raftnode/raft"
)

func TestOversizedEntryRefused(t *testing.T) {
	fs := newFS(t)
	w, err := Open(Options{FS: fs, Dir: dir, MaxRecordSize: 100, Prealloc: PreallocOff})
	if err != nil {
		t.Fatal(err)
	}
	err = w.Save(Batch{Entries: []raft.Entry{{Index: 1, Term: 1, Data: make([]byte, 200)}}})
	if err == nil {
		t.Fatal("saved an entry above the record limit")
	}
	if w.LastIndex() != 0 {
		t.Fatal("refused entry is visible")
	}
}

// syncGate is a file system whose file Syncs, and direct (O_DSYNC) writes,
// can be held, to observe group commit: each is one durable commit.
type syncGate struct {
	*crashfs.FS
	mu    sync.Mutex
	syncs int
	hold  chan struct{} // while non-nil, Sync waits for it to close
	held  chan struct{} // closed when a Sync starts waiting
}

type gateFile struct {
	vfs.File
	g *syncGate
}

func (g *syncGate) Create(name string) (vfs.File, error) {
	f, err := g.FS.Create(name)
	return gateFile{f, g}, err
}

func (f gateFile) Sync() error {
	f.g.gate()
	return f.File.Sync()
}

// gate counts one durable operation and, if armed, holds it.
func (g *syncGate) gate() {
	g.mu.Lock()
	g.syncs++
	hold, held := g.hold, g.held
	g.hold = nil
	g.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
}

type gateDirect struct {
	vfs.DirectWriter
	g *syncGate
}

func (g *syncGate) OpenDirect(name string) (vfs.DirectWriter, error) {
	d, err := g.FS.OpenDirect(name)
	return gateDirect{d, g}, err
}

func (d gateDirect) WriteAt(p []byte, off int64) (int, error) {
	d.g.gate()
	return d.DirectWriter.WriteAt(p, off)
}

func (w *WAL) queued() int {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return len(w.queue)
}

func TestGroupCommitCoalescesConcurrentSaves(t *testing.T) {
	g := &syncGate{FS: newFS(t)}
	w, err := Open(Options{FS: g, Dir: dir, Prealloc: PreallocOff})
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.hold, g.held = make(chan struct{}), make(chan struct{})
	hold, held, base := g.hold, g.held, g.syncs
	g.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	wg.Add(1)
	go func() { defer wg.Done(); errs <- w.Save(Batch{Entries: entries(1, 1, 1)}) }()
	<-held // the first commit is inside its fsync
	const waiters = 16
	for k := 0; k < waiters; k++ {
		hs := raft.HardState{Term: 1, Commit: uint64(k)}
		wg.Add(1)
		go func() { defer wg.Done(); errs <- w.Save(Batch{HardState: &hs}) }()
	}
	for w.queued() < waiters {
		runtime.Gosched() // wait until all are queued behind the held fsync
	}
	close(hold)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := g.syncs - base; n != 2 {
		t.Fatalf("%d fsyncs for 1+%d concurrent saves, want 2 (one per round)", n, waiters)
	}
	if st := w.Stats(); st.Saves != 1+waiters || st.Fsyncs != 2 {
		t.Fatalf("stats %+v, want %d saves in 2 fsyncs", st, 1+waiters)
	}
}

func TestFsyncErrorIsSticky(t *testing.T) {
	for _, direct := range []bool{false, true} {
		cfs := newFS(t)
		var fs vfs.FS = noDirect{cfs}
		// Buffered: the write succeeds, the fsync fails. Direct: the
		// O_DSYNC write itself fails.
		failAfter, msg := int64(1), "sync wal segment"
		if direct {
			fs, failAfter, msg = cfs, 0, "direct write"
		}
		w := open(t, fs, nil)
		if (w.dio != nil) != direct {
			t.Fatalf("direct=%v: WAL write mode is %s", direct, w.writeMode())
		}
		if err := w.Save(Batch{Entries: entries(1, 3, 1)}); err != nil {
			t.Fatal(err)
		}
		cfs.SetCrashAfter(failAfter, nil)
		if err := w.Save(Batch{Entries: entries(4, 4, 1)}); err == nil {
			t.Fatalf("direct=%v: save succeeded though its write or fsync failed", direct)
		}
		cfs.SetCrashAfter(-1, nil)
		if w.LastIndex() != 3 {
			t.Fatalf("direct=%v: unsynced entry visible: last index %d", direct, w.LastIndex())
		}
		if err := w.Save(Batch{Entries: entries(4, 4, 1)}); err == nil || !strings.Contains(err.Error(), msg) {
			t.Fatalf("direct=%v: save after the failure: %v, want the sticky error (%q)", direct, err, msg)
		}
	}
}
