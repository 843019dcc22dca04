// Package statemachinetest checks that a statemachine.Machine keeps the
// contract the driver relies on. A state machine's tests call Run with a
// Harness that makes machines and commands; Run knows nothing else of the
// machine.
package statemachinetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/capraft/capraft/raftnode/statemachine"
)

// Harness plugs a state machine into Run.
type Harness struct {
	// New returns a machine in its initial state.
	New func() statemachine.Machine
	// NewCommands returns a source of commands drawn from seed: called
	// with each entry's index in log order, it returns the entry's data
	// (never empty). The same seed must give the same commands.
	NewCommands func(seed uint64) func(index uint64) []byte
	// State returns an encoding of m's state (Applied included) that is
	// equal for equal states. Nil: the bytes of m's snapshot, which must
	// then be canonical.
	State func(t testing.TB, m statemachine.Machine) []byte
	// Seed seeds the logs (0: from the clock); it is logged on failure.
	Seed uint64
	// Entries is the length of the logs (0: 2000).
	Entries int
}

// Run runs the contract's tests as subtests of t.
func Run(t *testing.T, h Harness) {
	if h.State == nil {
		h.State = snapshotBytes
	}
	if h.Entries <= 0 {
		h.Entries = 2000
	}
	seed := h.Seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the logs were drawn from seed %d (Harness.Seed)", seed)
		}
	})
	c := &contract{h: h, seed: seed, logs: make(map[uint64][]statemachine.Entry)}
	t.Run("ApplyKeepsLogOrderWhateverTheBatches", c.applyInOrder)
	t.Run("ReappliedIndexesAreIgnored", c.reapplied)
	t.Run("SnapshotIsConsistentAsOfItsIndexWhileApplyGoesOn", c.snapshotWhileApplying)
	t.Run("RestoreFromStreamEqualsOriginal", c.restoreEqualsOriginal)
	t.Run("RestoreOfDamagedStreamFailsWithoutInstallingPart", c.restoreRejectsDamage)
	t.Run("EmptyStreamRestoresInitialState", c.emptyStream)
}

type contract struct {
	h    Harness
	seed uint64
	logs map[uint64][]statemachine.Entry
}

// log returns a log of h.Entries entries drawn from the seed and salt:
// commands, with entries without data (membership changes, a new
// leader's empty entry) between them, some gaps in the indexes, and terms
// that grow now and then.
func (c *contract) log(salt uint64) []statemachine.Entry {
	if ents, ok := c.logs[salt]; ok {
		return ents[:len(ents):len(ents)]
	}
	rng := rand.New(rand.NewPCG(c.seed, salt))
	cmds := c.h.NewCommands(c.seed ^ salt)
	ents := make([]statemachine.Entry, 0, c.h.Entries)
	var index, term uint64 = 0, 1
	for range c.h.Entries {
		index += 1 + uint64(rng.IntN(20)/19) // a gap now and then
		if rng.IntN(50) == 0 {
			term++
		}
		e := statemachine.Entry{Index: index, Term: term}
		if rng.IntN(10) != 0 {
			e.Data = cmds(index)
		}
		ents = append(ents, e)
	}
	c.logs[salt] = ents
	return ents[:len(ents):len(ents)]
}

// batches splits ents into batches of random sizes (1 to max).
func batches(rng *rand.Rand, ents []statemachine.Entry, max int) [][]statemachine.Entry {
	var bs [][]statemachine.Entry
	for len(ents) > 0 {
		n := min(len(ents), 1+rng.IntN(max))
		bs = append(bs, ents[:n])
		ents = ents[n:]
	}
	return bs
}

// apply applies ents to m in one batch, checking Apply's own promises,
// and returns the results.
func apply(t testing.TB, m statemachine.Machine, ents []statemachine.Entry) []statemachine.Result {
	t.Helper()
	if len(ents) == 0 {
		return nil
	}
	before := m.Applied()
	res, err := m.Apply(ents)
	if err != nil {
		t.Fatalf("Apply entries %d-%d: %v", ents[0].Index, ents[len(ents)-1].Index, err)
	}
	if len(res) != len(ents) {
		t.Fatalf("Apply of %d entries returned %d results", len(ents), len(res))
	}
	for i, e := range ents {
		if (len(e.Data) == 0 || e.Index <= before) && res[i] != nil {
			t.Fatalf("entry %d (data %d bytes, applied index %d): result %v, want nil", e.Index, len(e.Data), before, res[i])
		}
	}
	if want := max(before, ents[len(ents)-1].Index); m.Applied() != want {
		t.Fatalf("Applied %d after applying through %d from %d", m.Applied(), ents[len(ents)-1].Index, before)
	}
	return res
}

// applyAll applies ents to m in batches of at most max entries.
func applyAll(t testing.TB, m statemachine.Machine, rng *rand.Rand, ents []statemachine.Entry, max int) []statemachine.Result {
	t.Helper()
	var res []statemachine.Result
	for _, b := range batches(rng, ents, max) {
		res = append(res, apply(t, m, b)...)
	}
	return res
}

func (c *contract) rng(salt uint64) *rand.Rand { return rand.New(rand.NewPCG(c.seed+1, salt)) }

// Machines applying the same log reach the same state and results,
// whatever the batches, and results kept from earlier batches stay as
// they were when returned.
func (c *contract) applyInOrder(t *testing.T) {
	ents := c.log(1)
	rng := c.rng(1)
	one, many := c.h.New(), c.h.New()
	var resOne, resMany []statemachine.Result // compared at the end: none may be reused
	for _, b := range batches(rng, ents, 64) {
		for i := range b {
			resOne = append(resOne, apply(t, one, b[i:i+1])...)
		}
		resMany = append(resMany, apply(t, many, b)...)
		if rng.IntN(20) == 0 {
			if !bytes.Equal(c.h.State(t, one), c.h.State(t, many)) {
				t.Fatalf("after entry %d: the state applied one entry at a time differs from the state applied in batches", b[len(b)-1].Index)
			}
		}
	}
	if !bytes.Equal(c.h.State(t, one), c.h.State(t, many)) {
		t.Fatal("the state applied one entry at a time differs from the state applied in batches")
	}
	for i := range ents {
		if !reflect.DeepEqual(resOne[i], resMany[i]) {
			t.Fatalf("entry %d: result %+v one at a time, %+v in a batch", ents[i].Index, resOne[i], resMany[i])
		}
	}
	// Results returned early and kept must not have been overwritten by
	// later batches: a third machine applying the same log from scratch
	// gives the same results.
	again := applyAll(t, c.h.New(), rng, ents, 1000)
	for i := range ents {
		if !reflect.DeepEqual(again[i], resMany[i]) {
			t.Fatalf("entry %d: result kept since its batch is now %+v, a fresh machine returns %+v", ents[i].Index, resMany[i], again[i])
		}
	}
}

// Entries at or below Applied are ignored, alone or in a batch with new
// ones: a replayed log suffix changes nothing.
func (c *contract) reapplied(t *testing.T) {
	ents := c.log(2)
	rng := c.rng(2)
	m, ref := c.h.New(), c.h.New()
	done := 0
	for done < len(ents) {
		next := min(len(ents), done+1+rng.IntN(100))
		fresh := applyAll(t, ref, rng, ents[done:next], 16)
		// Replay some already applied entries: nothing changes.
		if done > 0 {
			from := rng.IntN(done)
			before, applied := c.h.State(t, m), m.Applied()
			for _, r := range apply(t, m, ents[from:done]) {
				if r != nil {
					t.Fatalf("a replayed entry returned a result: %+v", r)
				}
			}
			if m.Applied() != applied || !bytes.Equal(c.h.State(t, m), before) {
				t.Fatalf("replaying entries %d-%d at applied index %d changed the state", ents[from].Index, ents[done-1].Index, applied)
			}
			// A batch that starts with old entries and goes on with new
			// ones applies the new ones only.
			res := apply(t, m, ents[from:next])
			for i, r := range res[done-from:] {
				if !reflect.DeepEqual(r, fresh[i]) {
					t.Fatalf("entry %d after a replayed prefix: result %+v, want %+v", ents[done+i].Index, r, fresh[i])
				}
			}
		} else {
			apply(t, m, ents[done:next])
		}
		done = next
		if !bytes.Equal(c.h.State(t, m), c.h.State(t, ref)) {
			t.Fatalf("after entry %d: replays changed the state", ents[done-1].Index)
		}
	}
}

// A snapshot is the state as of its index, whatever Apply does meanwhile:
// it is written while the next entries are applied (run with -race), and
// restores to the state the machine had at its index.
func (c *contract) snapshotWhileApplying(t *testing.T) {
	ents := c.log(3)
	rng := c.rng(3)
	m := c.h.New()
	step := max(1, len(ents)/4)
	for pos := 0; pos < len(ents); {
		at := min(len(ents), pos+1+rng.IntN(step))
		applyAll(t, m, rng, ents[pos:at], 32)
		want := c.h.State(t, m)
		sn, err := m.Snapshot()
		if err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		if sn.Index() != m.Applied() {
			t.Fatalf("snapshot index %d at applied index %d", sn.Index(), m.Applied())
		}
		var buf bytes.Buffer
		var werr error
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, werr = sn.WriteTo(&buf)
		}()
		// Apply goes on while the snapshot is written.
		pos = min(len(ents), at+1+rng.IntN(step))
		applyAll(t, m, rng, ents[at:pos], 8)
		wg.Wait()
		if werr != nil {
			t.Fatalf("WriteTo: %v", werr)
		}
		// Written again once Apply went on: the same bytes.
		var again bytes.Buffer
		if _, err := sn.WriteTo(&again); err != nil {
			t.Fatalf("WriteTo again: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), again.Bytes()) {
			t.Fatalf("the snapshot at index %d wrote other bytes once Apply went on", sn.Index())
		}
		index := sn.Index()
		sn.Release()
		r := c.h.New()
		if err := r.Restore(bytes.NewReader(buf.Bytes()), index); err != nil {
			t.Fatalf("Restore of the snapshot at %d: %v", index, err)
		}
		if !bytes.Equal(c.h.State(t, r), want) {
			t.Fatalf("the snapshot taken at index %d, written while Apply went on, restores to another state", index)
		}
	}
	// Snapshots taken on the way changed nothing.
	ref := c.h.New()
	applyAll(t, ref, rng, ents, 256)
	if !bytes.Equal(c.h.State(t, m), c.h.State(t, ref)) {
		t.Fatal("taking and writing snapshots while applying changed the state")
	}
}

// A machine restored from another's snapshot stream is that machine: the
// same state, and the same results and state as it applies what follows.
func (c *contract) restoreEqualsOriginal(t *testing.T) {
	ents := c.log(4)
	rng := c.rng(4)
	for _, cut := range []int{0, 1, len(ents) / 3, len(ents) - 1} {
		orig := c.h.New()
		applyAll(t, orig, rng, ents[:cut], 64)
		b := streamOf(t, orig)
		index := orig.Applied()
		r := c.h.New()
		apply(t, r, c.log(5)[:10]) // some other state, replaced whole
		if err := r.Verify(bytes.NewReader(b), index); err != nil {
			t.Fatalf("Verify of a good stream: %v", err)
		}
		if err := r.Restore(bytes.NewReader(b), index); err != nil {
			t.Fatalf("Restore at %d: %v", index, err)
		}
		if r.Applied() != index || !bytes.Equal(c.h.State(t, r), c.h.State(t, orig)) {
			t.Fatalf("restored at %d: applied %d, and the state differs from the original", index, r.Applied())
		}
		rest := ents[cut:]
		got, want := applyAll(t, r, rng, rest, 64), applyAll(t, orig, rng, rest, 64)
		for i := range rest {
			if !reflect.DeepEqual(got[i], want[i]) {
				t.Fatalf("entry %d after a restore at %d: result %+v, the original's %+v", rest[i].Index, index, got[i], want[i])
			}
		}
		if !bytes.Equal(c.h.State(t, r), c.h.State(t, orig)) {
			t.Fatalf("restored at %d, then applied the rest: the state differs from the original's", index)
		}

		// Restored at a later index (the entries between were not the
		// state machine's): Applied is that index, the state otherwise
		// the same.
		later := c.h.New()
		if err := later.Restore(bytes.NewReader(b), index+5); err != nil {
			t.Fatalf("Restore at %d of a snapshot at %d: %v", index+5, index, err)
		}
		ref := c.h.New()
		if err := ref.Restore(bytes.NewReader(b), index); err != nil {
			t.Fatal(err)
		}
		apply(t, ref, []statemachine.Entry{{Index: index + 5, Term: 1}})
		if later.Applied() != index+5 || !bytes.Equal(c.h.State(t, later), c.h.State(t, ref)) {
			t.Fatalf("restored at %d a snapshot at %d: applied %d, or the state differs", index+5, index, later.Applied())
		}

		// Restored at an earlier index than the state it holds: refused.
		if index > 0 {
			checkRefused(t, c, b, index-1, "a snapshot at index %d restored at %d", index, index-1)
		}
	}
}

// checkRefused checks Verify and Restore of b at index fail, Verify
// leaving the state as it was and Restore leaving it as it was or
// initial.
func checkRefused(t *testing.T, c *contract, b []byte, index uint64, what string, args ...any) {
	t.Helper()
	m := c.h.New()
	apply(t, m, c.log(6)[:50])
	before, applied := c.h.State(t, m), m.Applied()
	if err := m.Verify(bytes.NewReader(b), index); err == nil {
		t.Fatalf("Verify accepted %s", fmt.Sprintf(what, args...))
	}
	if m.Applied() != applied || !bytes.Equal(c.h.State(t, m), before) {
		t.Fatalf("a refused Verify (%s) changed the state", fmt.Sprintf(what, args...))
	}
	if err := m.Restore(bytes.NewReader(b), index); err == nil {
		t.Fatalf("Restore accepted %s", fmt.Sprintf(what, args...))
	}
	c.checkBeforeOrInitial(t, m, before, "a refused Restore (%s)", fmt.Sprintf(what, args...))
}

// checkBeforeOrInitial checks m holds the state before, or the initial
// state: what a failed Restore may leave, never part of a stream.
func (c *contract) checkBeforeOrInitial(t *testing.T, m statemachine.Machine, before []byte, what string, args ...any) {
	t.Helper()
	now := c.h.State(t, m)
	if bytes.Equal(now, before) {
		return
	}
	if m.Applied() != 0 || !bytes.Equal(now, c.h.State(t, c.h.New())) {
		t.Fatalf("%s left a state that is neither the one before it nor the initial one (applied %d)", fmt.Sprintf(what, args...), m.Applied())
	}
}

// A damaged stream (truncated, a byte altered, bytes added, a read error)
// is refused by Verify and Restore, never installed in part.
func (c *contract) restoreRejectsDamage(t *testing.T) {
	ents := c.log(7)
	rng := c.rng(7)
	orig := c.h.New()
	applyAll(t, orig, rng, ents, 64)
	b := streamOf(t, orig)
	index := orig.Applied()
	for i := range 40 {
		var bad []byte
		var what string
		switch i % 4 {
		case 0: // truncated (not to zero bytes: that is the initial state)
			n := 1 + rng.IntN(len(b)-1)
			if i == 0 {
				n = len(b) - 1
			}
			bad, what = b[:n], fmt.Sprintf("truncated to %d of %d bytes", n, len(b))
		case 1: // one byte altered
			bad = bytes.Clone(b)
			at := rng.IntN(len(b))
			bad[at] ^= byte(1 + rng.IntN(255))
			what = fmt.Sprintf("byte %d of %d altered", at, len(b))
		case 2: // bytes added
			bad = append(bytes.Clone(b), make([]byte, 1+rng.IntN(8))...)
			what = "with bytes after its end"
		case 3: // a read error partway
			n := rng.IntN(len(b))
			m := c.h.New()
			apply(t, m, c.log(6)[:50])
			before := c.h.State(t, m)
			r := io.MultiReader(bytes.NewReader(b[:n]), errReader{})
			if err := m.Restore(r, index); err == nil {
				t.Fatalf("Restore of a stream failing after %d bytes succeeded", n)
			}
			c.checkBeforeOrInitial(t, m, before, "Restore of a stream failing after %d bytes", n)
			continue
		}
		checkRefused(t, c, bad, index, "a stream %s", what)
	}
}

// A stream of zero bytes restores the initial state, at the index given.
func (c *contract) emptyStream(t *testing.T) {
	m := c.h.New()
	apply(t, m, c.log(8)[:100])
	if err := m.Verify(bytes.NewReader(nil), 7); err != nil {
		t.Fatalf("Verify of an empty stream: %v", err)
	}
	if err := m.Restore(bytes.NewReader(nil), 7); err != nil {
		t.Fatalf("Restore of an empty stream: %v", err)
	}
	ref := c.h.New()
	apply(t, ref, []statemachine.Entry{{Index: 7, Term: 1}})
	if m.Applied() != 7 || !bytes.Equal(c.h.State(t, m), c.h.State(t, ref)) {
		t.Fatalf("an empty stream restored at 7: applied %d, and not the initial state", m.Applied())
	}
}

type errReader struct{}

var errInjected = errors.New("injected read error")

func (errReader) Read([]byte) (int, error) { return 0, errInjected }

// streamOf returns m's snapshot stream.
func streamOf(t testing.TB, m statemachine.Machine) []byte {
	t.Helper()
	sn, err := m.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer sn.Release()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func snapshotBytes(t testing.TB, m statemachine.Machine) []byte { return streamOf(t, m) }
