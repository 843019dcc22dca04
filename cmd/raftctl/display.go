package main

import (
	"encoding/base64"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/cmd/internal/cli"
)

// How much of a key or value raftctl shows where people read it; -o json
// prints them whole.
const (
	// cellMax bounds a key or value in a table row.
	cellMax = 256
	// msgKeyMax bounds a key quoted in an error message, as the client
	// library bounds values.
	msgKeyMax = 64
)

// setText sets obj[name] to v when v is valid UTF-8, and otherwise
// obj[name+"_base64"] to its standard base64 encoding: JSON strings hold
// only UTF-8, and a field name that says the encoding keeps a script that
// expects text from reading base64 as if it were the value.
func setText[T string | []byte](obj map[string]any, name string, v T) {
	if utf8.ValidString(string(v)) {
		obj[name] = string(v)
		return
	}
	obj[name+"_base64"] = base64.StdEncoding.EncodeToString([]byte(v))
}

// kvJSON is the JSON form of a key's state (see jsonHelp).
func kvJSON(kv client.KeyValue) map[string]any {
	obj := map[string]any{
		"create_revision": kv.CreateRevision, "mod_revision": kv.ModRevision, "version": kv.Version,
	}
	setText(obj, "key", kv.Key)
	setText(obj, "value", kv.Value)
	if kv.Lease != 0 {
		obj["lease"] = kv.Lease
	}
	return obj
}

// plain reports whether s shows as itself: valid UTF-8 of printable
// characters (spaces included, tabs and newlines not).
func plain(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// cell is s as a table or plain line shows it: as is when it is plain and
// does not start with a quote, else Go-quoted (so terminal escapes,
// tabs and newlines show as \x1b, \t, \n and cannot break the layout);
// one over cellMax bytes is shortened to a prefix, "..." and its length.
func cell(s string) string {
	switch {
	case len(s) > cellMax:
		return cli.QuoteShort(s, cellMax)
	case plain(s) && !strings.HasPrefix(s, `"`):
		return s
	}
	return strconv.Quote(s)
}

// escapeText replaces what is not printable in s (terminal escapes,
// newlines, bytes that are not UTF-8) with its Go escape, leaving the
// rest as it is. Error messages pass through it: they quote what nodes
// and users sent.
func escapeText(s string) string {
	if plain(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r != utf8.RuneError && strconv.IsPrint(r) {
			b.WriteString(s[i : i+n])
		} else {
			q := strconv.Quote(s[i : i+n])
			b.WriteString(q[1 : len(q)-1])
		}
		i += n
	}
	return b.String()
}

// terminalSafe reports whether v can be written raw to a terminal:
// printable text, tabs and newlines (a carriage return or an escape could
// hide or forge what is shown).
func terminalSafe(v string) bool {
	for _, r := range v {
		if r == utf8.RuneError || r != '\n' && r != '\t' && !strconv.IsPrint(r) {
			return false
		}
	}
	return true
}

// isTerminal reports whether w is a terminal (a character device, which
// /dev/null also is: escaping what is thrown away costs nothing).
func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// shellQuote writes s so that a POSIX shell reads it back as s: as is
// when it is made of safe characters, in single quotes when it is
// printable, else in bash's $'...' with escapes.
func shellQuote(s string) string {
	safe := func(r rune) bool {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("_-./:,=+@%", r)
	}
	switch {
	case s != "" && strings.IndexFunc(s, func(r rune) bool { return !safe(r) }) < 0:
		return s
	case plain(s):
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	var b strings.Builder
	b.WriteString("$'")
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r != utf8.RuneError && strconv.IsPrint(r):
			b.WriteString(s[i : i+n])
		default:
			for j := i; j < i+n; j++ {
				b.WriteString(`\x`)
				b.WriteString(strconv.FormatUint(uint64(s[j])|0x100, 16)[1:])
			}
		}
		i += n
	}
	b.WriteByte('\'')
	return b.String()
}

// keyError is an error about key whose message may quote the key whole
// (the client library's do): it shows it shortened instead.
type keyError struct {
	err error
	key string
}

func (e *keyError) Error() string {
	return strings.ReplaceAll(e.err.Error(), strconv.Quote(e.key), cli.QuoteShort(e.key, msgKeyMax))
}

func (e *keyError) Unwrap() error { return e.err }

// aboutKey wraps err, an error of an operation on key, so that its
// message shows a long key shortened.
func aboutKey(err error, key string) error {
	if err == nil || len(key) <= msgKeyMax {
		return err
	}
	return &keyError{err: err, key: key}
}
