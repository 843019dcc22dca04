package kv

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpora in testdata/fuzz")

// sampleCommands covers every kind and op field.
func sampleCommands() []Command {
	return []Command{
		{Kind: CmdOpenSession, ID: 1, Time: 1_700_000_000_000_000_000},
		{Kind: CmdKeepAlive, ID: math.MaxUint64, Time: -1, Session: 300},
		{Kind: CmdCloseSession, Session: 1 << 40, Time: math.MinInt64},
		{Kind: CmdBatch, ID: 9, Time: 5, Session: 7, AckedBelow: 3},
		{Kind: CmdBatch, ID: 10, Time: 6, Session: 7, AckedBelow: 4, Ops: []WriteOp{
			put(4, "key", "value"),
			del(5, "key"),
			{Seq: 6, Type: OpCAS, Key: []byte("k"), Value: []byte("new"), Compare: CompareValue, CompareValue: []byte("old")},
			{Seq: 7, Type: OpCAS, Key: []byte("k"), Compare: CompareModRevision, CompareRevision: 1 << 33, DeleteOnSuccess: true},
			{Seq: 8, Type: OpCAS, Key: []byte("k"), Value: bytes.Repeat([]byte{0xff}, 300), Compare: CompareAbsent},
			{Seq: math.MaxUint64, Type: 200, Compare: 100},
		}},
	}
}

// authCommands covers the auth kinds' fields, valid or not (the decoder
// leaves the validation to Apply).
func authCommands() []Command {
	return []Command{
		{Kind: CmdTokenKey, ID: 11, Time: 7, TokenKey: TokenKey{ID: 1, Secret: secret(32, 0xa5)}},
		{Kind: CmdTokenKey, ID: 12, Time: 8, Session: 3, AckedBelow: 2, TokenKey: TokenKey{ID: math.MaxUint64, Secret: secret(200, 0)}},
		{Kind: CmdTokenKey, Time: -1},
		{Kind: CmdRevoke, ID: 13, Time: 9, Revoke: Revocation{ID: tokenID(0xff, 1), Expires: 1_700_000_000_000_000_000}},
		{Kind: CmdRevoke, Time: math.MinInt64, Revoke: Revocation{Expires: -1}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for i, c := range append(append(append(sampleCommands(), authCommands()...), txnCommands()...), leaseCommands()...) {
		b := c.AppendBinary([]byte("prefix"))
		if string(b[:6]) != "prefix" {
			t.Fatalf("%d: AppendBinary clobbered dst", i)
		}
		got, err := DecodeCommand(b[6:])
		if err != nil {
			t.Fatalf("%d: decode: %v", i, err)
		}
		if len(c.Ops) == 0 {
			c.Ops = nil
		}
		if len(got.Ops) == 0 {
			got.Ops = nil
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%d: round trip\n got  %+v\n want %+v", i, got, c)
		}
		if again := got.AppendBinary(nil); !bytes.Equal(again, b[6:]) {
			t.Fatalf("%d: re-encoding differs", i)
		}
	}
	// Ops of a non-batch command are not encoded, nor the auth fields of
	// a command of another kind.
	for _, c := range []Command{
		{Kind: CmdKeepAlive, Session: 1, Ops: []WriteOp{put(1, "k", "v")}},
		{Kind: CmdBatch, Session: 1, TokenKey: TokenKey{ID: 1, Secret: secret(32, 1)}, Revoke: Revocation{ID: tokenID(1, 1), Expires: 5}},
		{Kind: CmdTokenKey, Ops: []WriteOp{put(1, "k", "v")}, Revoke: Revocation{ID: tokenID(1, 1)}},
		{Kind: CmdRevoke, Ops: []WriteOp{put(1, "k", "v")}, TokenKey: TokenKey{ID: 1}},
	} {
		got, err := DecodeCommand(enc(c))
		want := Command{Kind: c.Kind, Session: c.Session}
		switch c.Kind {
		case CmdTokenKey:
			want.TokenKey = c.TokenKey
		case CmdRevoke:
			want.Revoke = c.Revoke
		}
		if len(got.Ops) == 0 {
			got.Ops = nil
		}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("%v with other kinds' fields: %+v %v", c.Kind, got, err)
		}
	}
}

// TestDecodeAuthCommandsReusesNoStaleFields decodes an auth command into
// a Command that held a batch and another auth command, as Apply does,
// and checks nothing of the earlier ones is left.
func TestDecodeAuthCommandsReusesNoStaleFields(t *testing.T) {
	var c Command
	seq := []Command{
		{Kind: CmdBatch, Session: 1, Ops: []WriteOp{put(1, "k", "v")}},
		tokenKeyCmd(3, secret(40, 3)),
		revokeCmd(tokenID(2, 2), 9),
		{Kind: CmdBatch, Session: 1, Ops: []WriteOp{put(1, "k", "v")}},
		tokenKeyCmd(4, secret(33, 4)),
	}
	for i, want := range seq {
		if err := decodeCommand(&c, enc(want), c.Ops); err != nil {
			t.Fatal(err)
		}
		if len(c.Ops) == 0 {
			c.Ops = nil
		}
		if !reflect.DeepEqual(c, want) {
			t.Fatalf("%d: decoded into a reused Command:\n got  %+v\n want %+v", i, c, want)
		}
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	valid := enc(sampleCommands()[4])
	cases := map[string][]byte{
		"empty":            nil,
		"version":          append([]byte{2}, valid[1:]...),
		"kind 0":           enc(Command{Kind: 0}),
		"kind after last":  enc(Command{Kind: CmdLeaseExpire + 1}),
		"trailing":         append(bytes.Clone(valid), 0),
		"ops on keepalive": {commandVersion, byte(CmdKeepAlive), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0},
		"non-minimal id":   {commandVersion, byte(CmdOpenSession), 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"op count":         {commandVersion, byte(CmdBatch), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"op flags":         {commandVersion, byte(CmdBatch), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0x80, 0, 0},
		"empty cmp value":  {commandVersion, byte(CmdBatch), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 1, opFlagCompareValue, 0, 0, 0},
		"zero cmp rev":     {commandVersion, byte(CmdBatch), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3, 2, opFlagCompareRevision, 0, 0, 0},
		"key length":       {commandVersion, byte(CmdBatch), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 9, 0, 0, 0, 0, 0},
	}
	for i := range valid {
		cases[fmt.Sprint("truncated at ", i)] = valid[:i]
	}
	for j, c := range authCommands() {
		b := enc(c)
		for i := range b {
			cases[fmt.Sprint(c.Kind, j, " truncated at ", i)] = b[:i]
		}
		cases[fmt.Sprint(c.Kind, j, " trailing")] = append(bytes.Clone(b), 0)
	}
	cases["secret length"] = append(enc(Command{Kind: CmdTokenKey, TokenKey: TokenKey{ID: 1}})[:13], 1, 40)
	cases["non-minimal key id"] = append(enc(Command{Kind: CmdTokenKey})[:13], 0x81, 0, 0)
	for name, b := range cases {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// TestDecodeAliases documents that decoded slices alias the input but
// cannot be appended to over it.
func TestDecodeAliases(t *testing.T) {
	b := enc(Command{Kind: CmdBatch, Ops: []WriteOp{put(1, "k", "v"), put(2, "x", "y")}})
	c, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(c.Ops[0].Key, 'Z')
	c2, err := DecodeCommand(b)
	if err != nil || !reflect.DeepEqual(c, c2) {
		t.Fatalf("appending to a decoded key changed the input: %v", err)
	}
}

// writeCorpus writes seeds as a fuzz corpus directory.
func writeCorpus(t *testing.T, name string, seeds [][]byte) {
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, b := range seeds {
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func commandSeeds() [][]byte {
	var seeds [][]byte
	for _, c := range sampleCommands() {
		seeds = append(seeds, enc(c))
	}
	seeds = append(seeds, nil, []byte{commandVersion}, []byte{commandVersion, byte(CmdBatch), 0x80})
	// After the first seeds, so their files keep their names.
	for _, c := range authCommands() {
		seeds = append(seeds, enc(c))
	}
	for _, c := range txnCommands() {
		seeds = append(seeds, enc(c))
	}
	for _, c := range leaseCommands() {
		seeds = append(seeds, enc(c))
	}
	return seeds
}

// snapshotSeeds returns a few valid snapshots of growing richness. The
// third is of the state testdata/snapshot/v1.snap holds in format version
// 1; the fourth adds token keys and revocations.
func snapshotSeeds(t testing.TB) [][]byte {
	seeds := [][]byte{snapBytes(t, New(Config{}))}
	d := newDriver(t, Config{MaxSavedResults: 2})
	sess := d.open()
	d.batch(sess, 0, put(1, "a", "1"), put(2, "b", ""), del(3, "zz"))
	seeds = append(seeds, snapBytes(t, d.s))
	d.batch(sess, 2, put(4, "a", "2"), put(5, "", ""), WriteOp{Seq: 6, Type: OpCAS, Key: []byte("b"), Compare: CompareAbsent})
	d.open()
	seeds = append(seeds, snapBytes(t, d.s))
	d.apply(tokenKeyCmd(7, secret(MinTokenKeySize, 0xa5)))
	d.apply(tokenKeyCmd(2, secret(MaxTokenKeySize, 0x5a)))
	d.apply(revokeCmd(tokenID(1, 0), 0))
	d.apply(revokeCmd(tokenID(1, 1), d.now+int64(time.Minute)))
	d.apply(revokeCmd(tokenID(0, 1), d.now))
	seeds = append(seeds, snapBytes(t, d.s))
	// The fifth adds leases: one with keys (one of them also attached
	// before, one attached then re-put without it), one with a prefix and
	// none.
	l1 := d.grant(10*time.Second, "")
	l2 := d.grant(time.Minute, "p/")
	d.batch(sess, 0, leased(7, "la", "1", l1), leased(8, "lb", "2", l1), leased(9, "lc", "3", l1), put(10, "lc", "4"))
	d.apply(Command{Kind: CmdLeaseKeepAlive, Lease: LeaseCommand{IDs: []uint64{l2}}})
	return append(seeds, snapBytes(t, d.s))
}

// v1Snapshot returns testdata/snapshot/v1.snap, a version-1 snapshot (of
// snapshotSeeds' third state) written before version 2 existed.
func v1Snapshot(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "snapshot", "v1.snap"))
	if err != nil {
		t.Fatalf("read the version-1 golden snapshot: %v", err)
	}
	return b
}

// TestUpdateCorpus rewrites the committed seed corpora with -update-corpus;
// otherwise it checks they are present.
func TestUpdateCorpus(t *testing.T) {
	if *updateCorpus {
		writeCorpus(t, "FuzzDecodeCommand", commandSeeds())
		writeCorpus(t, "FuzzRestore", snapshotSeeds(t))
	}
	for _, name := range []string{"FuzzDecodeCommand", "FuzzRestore"} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", name, "seed*"))
		if err != nil || len(files) < 3 {
			t.Errorf("%s: %d seed files (%v); run go test -run TestUpdateCorpus -update-corpus", name, len(files), err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, b := range commandSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if again := c.AppendBinary(nil); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
		// Applying it is deterministic and never panics.
		var snaps [2][]byte
		var applied [2]Applied
		for i := range snaps {
			s := New(Config{MaxKeySize: 16, MaxValueSize: 64})
			index := uint64(1)
			if c.Session > 0 && c.Session < math.MaxUint64 {
				s.Apply(c.Session, enc(Command{Kind: CmdOpenSession}))
				index = c.Session + 1
			}
			applied[i] = s.Apply(index, b)
			snaps[i] = snapBytes(t, s)
		}
		if !reflect.DeepEqual(applied[0], applied[1]) || !bytes.Equal(snaps[0], snaps[1]) {
			t.Fatal("two stores applying the same entry differ")
		}
	})
}

func FuzzRestore(f *testing.F) {
	for _, b := range append(snapshotSeeds(f), v1Snapshot(f)) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkRestore(t, b)
		// Again with the checksum fixed, to get past it to the content.
		if len(b) >= 4 {
			body := b[:len(b)-4]
			checkRestore(t, binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli)))
		}
	})
}

// checkRestore checks Restore of b either fails leaving the store as it
// was, or succeeds into a store that snapshots to b (to b's version-2
// encoding when b is a version-1 snapshot); and that Machine.Verify, which
// decodes without building the state, says what Restore says.
func checkRestore(t *testing.T, b []byte) {
	s := New(Config{})
	s.Apply(1, enc(Command{Kind: CmdOpenSession}))
	before := snapBytes(t, s)
	verr := s.Machine().Verify(bytes.NewReader(b), math.MaxUint64)
	err := s.Restore(bytes.NewReader(b))
	if len(b) > 0 && fmt.Sprint(verr) != fmt.Sprint(err) {
		t.Fatalf("Verify says %v, Restore says %v", verr, err)
	}
	if err != nil {
		if after := snapBytes(t, s); !bytes.Equal(before, after) {
			t.Fatalf("failed Restore (%v) changed the store", err)
		}
		return
	}
	after := snapBytes(t, s)
	if b[len(snapMagic)] != snapVersion {
		// An older version: its state, in the current encoding, is
		// what the restored store writes again.
		b = after
		after = snapBytes(t, restored(t, Config{}, b))
	}
	if !bytes.Equal(after, b) {
		t.Fatalf("restored store snapshots differently:\n in  %x\n out %x", b, after)
	}
}

// TestFuzzSeedsMutated runs a bounded, seeded random mutation of the seeds
// through both fuzz properties (the fuzz engine is not run in CI).
func TestFuzzSeedsMutated(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewSource(seed))
	snaps := append(snapshotSeeds(t), v1Snapshot(t))
	cmds := commandSeeds()
	for i := range 300 {
		b := bytes.Clone(cmds[rng.Intn(len(cmds))])
		mutate(rng, &b)
		if c, err := DecodeCommand(b); err == nil && !bytes.Equal(c.AppendBinary(nil), b) {
			t.Fatalf("iteration %d: decoded %x re-encodes differently", i, b)
		}
		sb := bytes.Clone(snaps[rng.Intn(len(snaps))])
		mutate(rng, &sb)
		checkRestore(t, sb)
		if len(sb) >= 4 {
			body := sb[:len(sb)-4]
			checkRestore(t, binary.LittleEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, castagnoli)))
		}
	}
}

func mutate(rng *rand.Rand, b *[]byte) {
	for n := 1 + rng.Intn(3); n > 0; n-- {
		switch rng.Intn(3) {
		case 0:
			if len(*b) > 0 {
				(*b)[rng.Intn(len(*b))] ^= byte(1 + rng.Intn(255))
			}
		case 1:
			if len(*b) > 0 {
				*b = (*b)[:rng.Intn(len(*b))]
			}
		default:
			*b = append(*b, byte(rng.Intn(256)))
		}
	}
}
