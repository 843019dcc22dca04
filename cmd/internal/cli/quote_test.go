package cli

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestQuoteShortCutsWholeCharactersAndGivesTheLength(t *testing.T) {
	for _, tc := range []struct {
		s    string
		max  int
		want string
	}{
		{"short", 10, `"short"`},
		{"0123456789", 10, `"0123456789"`},
		{"0123456789a", 10, `"0123456789"... (11 bytes)`},
		{"ab\x1bcd", 3, `"ab\x1b"... (5 bytes)`},
		{strings.Repeat("é", 5), 5, `"éé"... (10 bytes)`}, // not half an é
		{"\xff\xff\xff\xff\xff\xff", 3, `"\xff\xff\xff"... (6 bytes)`},
	} {
		got := QuoteShort(tc.s, tc.max)
		if got != tc.want || !utf8.ValidString(got) {
			t.Errorf("QuoteShort(%q, %d) = %s, want %s", tc.s, tc.max, got, tc.want)
		}
	}
}
