package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode/kv"
)

// The node's limits on keys and values (raftnode/kv's defaults, which
// raftnode does not change). raftctl refuses what is over them before it
// connects: the node would refuse it anyway.
const (
	maxKeySize   = kv.DefaultMaxKeySize
	maxValueSize = kv.DefaultMaxValueSize
)

// limitError is a key or value over the node's limits, refused before
// sending.
type limitError struct{ msg string }

func (e *limitError) Error() string { return e.msg }

// checkKey refuses an empty key or one over the key limit.
func checkKey(key string) error {
	if key == "" {
		return usagef("empty key")
	}
	return checkKeyLen("key", key)
}

// checkKeyLen refuses s, a key or prefix, over the key limit.
func checkKeyLen(what, s string) error {
	if len(s) > maxKeySize {
		return &limitError{fmt.Sprintf("%s %s is over the node's key limit of 8 KiB (%d bytes); use a shorter one",
			what, cli.QuoteShort(s, msgKeyMax), maxKeySize)}
	}
	return nil
}

// valueSource reads a value given on the command line.
type valueSource struct {
	stdin    io.Reader
	stdinFor string // the argument stdin was read for, if any
}

// read returns the value named what (VALUE, OLD, NEW): the contents of
// file if it is set, else stdin's if arg is "-", else arg itself. Each is
// refused if it is over the value limit, before more than the limit is
// read.
func (s *valueSource) read(what, arg, fileFlag, file string) ([]byte, error) {
	switch {
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("%s: %v", fileFlag, err)
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > maxValueSize {
			return nil, tooLong(what, fmt.Sprintf("%s (%d bytes)", file, st.Size()))
		}
		v, err := readLimited(f)
		if errors.Is(err, errTooLong) {
			return nil, tooLong(what, file)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: read %s: %w", fileFlag, file, err)
		}
		return v, nil
	case arg == "-":
		if s.stdinFor != "" {
			return nil, usagef("%s and %s cannot both be - (stdin holds one value); give one of them with --old-file F or --file F", s.stdinFor, what)
		}
		s.stdinFor = what
		v, err := readLimited(s.stdin)
		if errors.Is(err, errTooLong) {
			return nil, tooLong(what, "stdin")
		}
		if err != nil {
			return nil, fmt.Errorf("read %s from stdin: %w", what, err)
		}
		return v, nil
	}
	if len(arg) > maxValueSize {
		return nil, tooLong(what, fmt.Sprintf("the argument (%d bytes)", len(arg)))
	}
	return []byte(arg), nil
}

var errTooLong = errors.New("over the value limit")

// readLimited reads r to its end, failing with errTooLong as soon as it
// holds more than maxValueSize bytes.
func readLimited(r io.Reader) ([]byte, error) {
	v, err := io.ReadAll(io.LimitReader(r, maxValueSize+1))
	if err == nil && len(v) > maxValueSize {
		err = errTooLong
	}
	return v, err
}

func tooLong(what, from string) error {
	return &limitError{fmt.Sprintf("%s from %s is over the node's value limit of 1 MiB (%d bytes); store less", what, from, maxValueSize)}
}
