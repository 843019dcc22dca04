package cli

import (
	"strconv"
	"unicode/utf8"
)

// QuoteShort quotes s for a message the way strconv.Quote does (so no byte
// reaches a terminal raw), and shortens it when it is longer than max
// bytes: its first max bytes (not splitting a character), "..." and its
// length, as in "aaaa"... (102400 bytes).
func QuoteShort(s string, max int) string {
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:cutAt(s, max)]) + "... (" + strconv.Itoa(len(s)) + " bytes)"
}

// cutAt returns n, or less if s[n] falls inside a UTF-8 character, so
// that s[:cutAt(s, n)] does not end with a split character.
func cutAt(s string, n int) int {
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return n
}
