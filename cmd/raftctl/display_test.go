package main

import (
	"bytes"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// samples returns strings that exercise escaping: fixed tricky ones and
// seeded random ones (no NUL, which argv cannot hold).
func samples(t *testing.T) []string {
	seed := uint64(time.Now().UnixNano())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed %d", seed)
		}
	})
	rng := rand.New(rand.NewPCG(seed, 0))
	out := []string{"plain", "with space", "it's", `"quoted"`, `back\slash`, "$HOME", "`cmd`", "!bang",
		"\x1b[31mred", "tab\there", "new\nline", "\xff\xfe", "é ü 日本", "\u202eevil", "ends with '", "", "-"}
	for range 300 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = 1 + byte(rng.IntN(255))
		}
		out = append(out, string(b))
	}
	return out
}

// clean reports whether s could not drive a terminal: valid UTF-8 with no
// control characters.
func clean(s string) bool {
	return utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }) < 0
}

func TestCellsAndMessagesHoldNoControlCharacters(t *testing.T) {
	for _, s := range samples(t) {
		c := cell(s)
		if !clean(c) || !clean(escapeText(s)) {
			t.Fatalf("%q shows as %q / %q", s, c, escapeText(s))
		}
		if c != s {
			// Quoted cells read back as the string.
			if u, err := strconv.Unquote(c); err != nil || u != s {
				t.Fatalf("cell(%q) = %q, which unquotes to %q (%v)", s, c, u, err)
			}
		}
	}
	if got := cell(strings.Repeat("é", 200)); !strings.HasSuffix(got, `"... (400 bytes)`) || !utf8.ValidString(got) {
		t.Fatalf("long cell %q", got)
	}
}

// The --after hint is a shell word that reads back as the key.
func TestShellQuoteReadsBackAsTheString(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to read the words back")
	}
	ss := samples(t)
	words := make([]string, len(ss))
	for i, s := range ss {
		words[i] = shellQuote(s)
		if !clean(words[i]) {
			t.Fatalf("shellQuote(%q) = %q holds control characters", s, words[i])
		}
	}
	out, err := exec.Command(bash, "-c", `printf '%s\0' `+strings.Join(words, " ")).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := bytes.Split(bytes.TrimSuffix(out, []byte{0}), []byte{0})
	if len(got) != len(ss) {
		t.Fatalf("bash read %d words back, want %d", len(got), len(ss))
	}
	for i, s := range ss {
		if string(got[i]) != s {
			t.Errorf("shellQuote(%q) = %s reads back as %q", s, words[i], got[i])
		}
	}
}
