package storage

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/raft"
)

const childDirEnv = "CAPRAFT_STORAGE_CHILD_DIR"

func childData(i uint64) []byte {
	b := make([]byte, 64+i%193)
	for k := 0; k+8 <= len(b); k += 8 {
		binary.LittleEndian.PutUint64(b[k:], i*0x9e3779b97f4a7c15+uint64(k))
	}
	return b
}

// TestProcessChild is not a test: it is the child process of
// TestSIGKILLKeepsReportedEntries. It appends batches until killed and
// prints "durable N" after each Save returns.
func TestProcessChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("child helper for TestSIGKILLKeepsReportedEntries")
	}
	s, err := Open(dir, Options{NodeID: 1, SegmentSize: 256 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	last, _ := s.LastIndex()
	fmt.Printf("durable %d\n", last)
	for {
		n := 1 + rng.Intn(64)
		batch := make([]raft.Entry, n)
		for k := range batch {
			i := last + 1 + uint64(k)
			batch[k] = raft.Entry{Index: i, Term: 1, Data: childData(i)}
		}
		if err := s.Save(raft.HardState{Term: 1, Vote: 1, Commit: last}, batch, nil); err != nil {
			fmt.Fprintln(os.Stderr, "child save:", err)
			os.Exit(4)
		}
		last += uint64(n)
		fmt.Printf("durable %d\n", last) // only after Save returned
	}
}

// TestSIGKILLKeepsReportedEntries runs the test binary itself as a child
// that appends under load, SIGKILLs it after a random number of
// acknowledgements, and checks that every entry it reported durable is there
// after reopening. Rounds continue on the same directory.
func TestSIGKILLKeepsReportedEntries(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	dir := t.TempDir()
	var reported uint64
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestProcessChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childDirEnv+"="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rng.Intn(300)
		sc := bufio.NewScanner(out)
		lines, killed := 0, false
		for sc.Scan() {
			// Every line counts, including those still in the pipe after the
			// kill: the child printed them only after Save returned.
			if v, ok := strings.CutPrefix(sc.Text(), "durable "); ok {
				n, err := strconv.ParseUint(v, 10, 64)
				if err != nil {
					t.Fatalf("bad child line %q", sc.Text())
				}
				if n < reported {
					t.Fatalf("round %d: child reports %d durable, earlier rounds reported %d", round, n, reported)
				}
				reported = n
				lines++
			}
			if lines == killAfter && !killed {
				cmd.Process.Signal(syscall.SIGKILL)
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed {
			t.Fatalf("round %d: child exited on its own: %v\n%s", round, err, stderr.String())
		}
		s, err := Open(dir, Options{NodeID: 1})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		last, _ := s.LastIndex()
		if last < reported {
			t.Fatalf("round %d: last index %d, child reported %d durable", round, last, reported)
		}
		es, err := s.Entries(1, reported+1, 1<<62)
		if err != nil || uint64(len(es)) != reported {
			t.Fatalf("round %d: reading 1..%d: %d entries, %v", round, reported, len(es), err)
		}
		for _, e := range es {
			if !bytes.Equal(e.Data, childData(e.Index)) {
				t.Fatalf("round %d: entry %d data differs", round, e.Index)
			}
		}
		s.Close()
		t.Logf("round %d: killed after %d acks, %d entries reported durable, %d recovered", round, killAfter, reported, last)
	}
}
