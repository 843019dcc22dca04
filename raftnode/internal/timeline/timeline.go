// Package timeline records a node's Raft events as a Chrome trace-event
// JSON file (the "JSON Array Format": Perfetto and chrome://tracing open
// it), so that one put can be followed across the nodes of a cluster on
// one timeline (raftctl trace merge lines up several nodes' files).
//
// It is fed by the same observers as the metrics: WAL fsyncs and applies
// (slices on the node's "wal" and "apply" tracks), client requests and
// send calls to peers (async slices: they overlap), snapshots, and leader
// changes (instant events). Timestamps are wall-clock microseconds since
// the Unix epoch, so the files of nodes on one machine, or on machines
// whose clocks agree, line up when merged.
package timeline

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/capraft/capraft/raftnode/internal/transport"
)

// Track ids (Chrome's tid) of a node's synchronous events.
const (
	tidRaft     = 1 // leader changes
	tidWAL      = 2 // fsyncs
	tidApply    = 3 // applies
	tidSnapshot = 4 // snapshots saved, received
)

// event is one trace event (see the Trace Event Format document).
type event struct {
	Name string         `json:"name"`
	Cat  string         `json:"cat,omitempty"`
	Ph   string         `json:"ph"`
	Ts   float64        `json:"ts"`            // µs since the epoch
	Dur  float64        `json:"dur,omitempty"` // µs, for ph X
	Pid  uint64         `json:"pid"`
	Tid  uint64         `json:"tid"`
	ID   string         `json:"id,omitempty"` // async events
	S    string         `json:"s,omitempty"`  // instant events' scope
	Args map[string]any `json:"args,omitempty"`
}

// Writer writes one node's trace to a file. It is safe for concurrent
// use; Close flushes it.
type Writer struct {
	pid uint64
	seq atomic.Uint64 // async event ids

	mu     sync.Mutex
	f      *os.File
	w      *bufio.Writer
	err    error // the first write error: tracing stops, the node goes on
	closed bool
}

// Create creates (or truncates) the trace file at path for node id.
func Create(path string, id uint64) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("trace file: %w", err)
	}
	t := &Writer{pid: id, f: f, w: bufio.NewWriterSize(f, 256<<10)}
	t.w.WriteString("[\n")
	t.write(event{Name: "process_name", Ph: "M", Pid: id, Args: map[string]any{"name": "node " + strconv.FormatUint(id, 10)}})
	for tid, name := range map[uint64]string{tidRaft: "raft", tidWAL: "wal", tidApply: "apply", tidSnapshot: "snapshots"} {
		t.write(event{Name: "thread_name", Ph: "M", Pid: id, Tid: tid, Args: map[string]any{"name": name}})
	}
	return t, nil
}

// Close ends the JSON array and closes the file. A file cut short (the
// node crashed) still opens: the format allows a missing "]".
func (t *Writer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.err == nil {
		// A last empty object, since every event ends with a comma.
		_, t.err = t.w.WriteString("{}]\n")
	}
	if t.err == nil {
		t.err = t.w.Flush()
	}
	if err := t.f.Close(); t.err == nil {
		t.err = err
	}
	return t.err
}

// write appends e. Called with or without mu (Create holds none).
func (t *Writer) write(e event) {
	b, err := json.Marshal(e)
	if err != nil {
		return // cannot happen: the fields are plain
	}
	if t.closed || t.err != nil {
		return
	}
	if _, err := t.w.Write(b); err == nil {
		_, err = t.w.WriteString(",\n")
		t.err = err
	} else {
		t.err = err
	}
}

func (t *Writer) emit(e event) {
	e.Pid = t.pid
	t.mu.Lock()
	defer t.mu.Unlock()
	t.write(e)
}

// micros is t in microseconds since the epoch.
func micros(t time.Time) float64 { return float64(t.UnixNano()) / 1e3 }

// slice records a synchronous event on track tid that ended now after
// took.
func (t *Writer) slice(tid uint64, name string, took time.Duration, args map[string]any) {
	end := time.Now()
	t.emit(event{Name: name, Ph: "X", Ts: micros(end.Add(-took)), Dur: float64(took.Nanoseconds()) / 1e3, Tid: tid, Args: args})
}

// async records an event that may overlap others of its kind (requests,
// send calls), as a begin/end pair that ended now after took.
func (t *Writer) async(cat, name string, took time.Duration, args map[string]any) {
	end := time.Now()
	id := strconv.FormatUint(t.seq.Add(1), 16)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.write(event{Name: name, Cat: cat, Ph: "b", Ts: micros(end.Add(-took)), Pid: t.pid, ID: id, Args: args})
	t.write(event{Name: name, Cat: cat, Ph: "e", Ts: micros(end), Pid: t.pid, ID: id})
}

// Fsync records a WAL commit (storage.Options.OnFsync).
func (t *Writer) Fsync(took time.Duration) { t.slice(tidWAL, "wal fsync", took, nil) }

// Applied records a batch applied (driver.Observer).
func (t *Writer) Applied(n int, took time.Duration) {
	t.slice(tidApply, "apply", took, map[string]any{"entries": n})
}

// SnapshotSaved records a snapshot written (driver.Observer).
func (t *Writer) SnapshotSaved(took time.Duration, err error) {
	t.slice(tidSnapshot, "snapshot save", took, errArgs(err))
}

// SnapshotReceived records a snapshot received (driver.Observer).
func (t *Writer) SnapshotReceived(took time.Duration, err error) {
	t.slice(tidSnapshot, "snapshot receive", took, errArgs(err))
}

// LeaderChanged records a new leader, or none (driver.Observer).
func (t *Writer) LeaderChanged(lead, term uint64) {
	name := "leader " + strconv.FormatUint(lead, 10)
	if lead == 0 {
		name = "no leader"
	}
	t.emit(event{Name: name, Ph: "i", S: "p", Ts: micros(time.Now()), Tid: tidRaft, Args: map[string]any{"term": term}})
}

// RoundTrip records a send call to a peer (transport.Observer).
func (t *Writer) RoundTrip(peer uint64, lane transport.Lane, took time.Duration) {
	t.async("peer", lane.String()+" → "+strconv.FormatUint(peer, 10), took, nil)
}

// SnapshotSent records a snapshot transfer (transport.Observer).
func (t *Writer) SnapshotSent(peer uint64, took time.Duration, err error) {
	args := errArgs(err)
	if args == nil {
		args = map[string]any{}
	}
	args["peer"] = peer
	t.async("snapshot", "snapshot send", took, args)
}

// Request records a client's KV call (services.RequestObserver).
func (t *Writer) Request(method, code string, took time.Duration) {
	t.async("client", method, took, map[string]any{"code": code})
}

func errArgs(err error) map[string]any {
	if err == nil {
		return nil
	}
	return map[string]any{"error": err.Error()}
}
