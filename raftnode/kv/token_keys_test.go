package kv

import (
	"bytes"
	"testing"
)

// TestTokenKeysAreAddedOnceAndTheHighestIsCurrent checks a key id keeps
// the first secret applied with it, and CurrentTokenKey is the highest id
// whatever the order the keys arrived in.
func TestTokenKeysAreAddedOnceAndTheHighestIsCurrent(t *testing.T) {
	d := newDriver(t, Config{})
	if id, key, ok := d.s.CurrentTokenKey(); ok || id != 0 || key != nil {
		t.Fatalf("empty store: CurrentTokenKey = %d %x %v", id, key, ok)
	}
	steps := []struct {
		id      uint64
		secret  []byte
		added   bool
		current uint64
	}{
		{5, secret(32, 5), true, 5},
		{2, secret(64, 2), true, 5},
		{5, secret(40, 9), false, 5}, // a second key 5: ignored
		{9, secret(48, 9), true, 9},
		{7, secret(33, 7), true, 9},
	}
	want := map[uint64][]byte{}
	for i, st := range steps {
		a := d.apply(tokenKeyCmd(st.id, st.secret))
		if len(a.Results) != 1 || a.Results[0].Code != OK || a.Results[0].Succeeded != st.added || a.Kind != CmdTokenKey {
			t.Fatalf("step %d: add key %d: %+v", i, st.id, a)
		}
		if st.added {
			want[st.id] = st.secret
		}
		id, key, ok := d.s.CurrentTokenKey()
		if !ok || id != st.current || !bytes.Equal(key, want[st.current]) {
			t.Fatalf("step %d: CurrentTokenKey = %d %x %v, want %d %x", i, id, key, ok, st.current, want[st.current])
		}
	}
	for id := range uint64(11) {
		key, ok := d.s.TokenKey(id)
		if w, wok := want[id]; ok != wok || !bytes.Equal(key, w) {
			t.Fatalf("TokenKey(%d) = %x %v, want %x %v", id, key, ok, w, wok)
		}
	}
	if d.s.Revision() != 0 {
		t.Fatalf("token keys moved the key revision to %d", d.s.Revision())
	}
}

// TestTokenKeyCommandsRejectMalformedKeys checks a key id 0 or a secret
// outside 32..64 bytes answers InvalidArgument and adds nothing.
func TestTokenKeyCommandsRejectMalformedKeys(t *testing.T) {
	d := newDriver(t, Config{})
	for _, c := range []Command{
		tokenKeyCmd(0, secret(32, 1)),
		tokenKeyCmd(1, nil),
		tokenKeyCmd(1, secret(MinTokenKeySize-1, 1)),
		tokenKeyCmd(1, secret(MaxTokenKeySize+1, 1)),
	} {
		a := d.apply(c)
		if r := a.Results[0]; r.Code != InvalidArgument || r.Message == "" || r.Succeeded {
			t.Fatalf("key %d with a %d-byte secret: %+v", c.TokenKey.ID, len(c.TokenKey.Secret), r)
		}
		if _, _, ok := d.s.CurrentTokenKey(); ok {
			t.Fatalf("key %d with a %d-byte secret was added", c.TokenKey.ID, len(c.TokenKey.Secret))
		}
	}
}

// TestTokenKeyIsCopiedFromTheEntry checks the store keeps its own copy of
// a key: the entry's buffer is the caller's to reuse.
func TestTokenKeyIsCopiedFromTheEntry(t *testing.T) {
	s := New(Config{})
	data := enc(tokenKeyCmd(1, secret(32, 0xaa)))
	if a := s.Apply(1, data); a.Err != nil || a.Results[0].Code != OK {
		t.Fatalf("apply: %+v", a)
	}
	clear(data)
	if key, _ := s.TokenKey(1); !bytes.Equal(key, secret(32, 0xaa)) {
		t.Fatalf("the stored key changed with the entry's buffer: %x", key)
	}
}

// TestTokenKeysAreCapped checks a new key beyond MaxTokenKeys answers
// TooLarge, while a repeated id is still ignored with OK.
func TestTokenKeysAreCapped(t *testing.T) {
	d := newDriver(t, Config{})
	for id := range uint64(MaxTokenKeys) {
		if r := d.apply(tokenKeyCmd(id+1, secret(32, byte(id)))).Results[0]; r.Code != OK || !r.Succeeded {
			t.Fatalf("key %d: %+v", id+1, r)
		}
	}
	if r := d.apply(tokenKeyCmd(MaxTokenKeys+1, secret(32, 1))).Results[0]; r.Code != TooLarge {
		t.Fatalf("key %d over the cap: %+v", MaxTokenKeys+1, r)
	}
	if r := d.apply(tokenKeyCmd(3, secret(32, 1))).Results[0]; r.Code != OK || r.Succeeded {
		t.Fatalf("a present key at the cap: %+v", r)
	}
	if id, _, _ := d.s.CurrentTokenKey(); id != MaxTokenKeys {
		t.Fatalf("current key %d, want %d", id, MaxTokenKeys)
	}
}

// TestSnapshotKeepsItsTokenKeys checks a snapshot taken before a key is
// added does not show it, and a store restored from it has exactly the
// keys of its time.
func TestSnapshotKeepsItsTokenKeys(t *testing.T) {
	d := newDriver(t, Config{})
	d.apply(tokenKeyCmd(4, secret(32, 4)))
	d.apply(tokenKeyCmd(2, secret(32, 2)))
	d.apply(tokenKeyCmd(6, secret(32, 6)))
	sn := d.s.Snapshot()
	d.apply(tokenKeyCmd(3, secret(32, 3)))
	d.apply(tokenKeyCmd(9, secret(32, 9)))
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	r := restored(t, Config{}, buf.Bytes())
	for id := range uint64(10) {
		_, ok := r.TokenKey(id)
		if want := id == 2 || id == 4 || id == 6; ok != want {
			t.Fatalf("restored TokenKey(%d) present %v, want %v", id, ok, want)
		}
	}
	if id, key, _ := r.CurrentTokenKey(); id != 6 || !bytes.Equal(key, secret(32, 6)) {
		t.Fatalf("restored current key %d %x", id, key)
	}
	if id, _, _ := d.s.CurrentTokenKey(); id != 9 {
		t.Fatalf("the live store's current key is %d, want 9", id)
	}
}
