package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/capraft/capraft/raftnode/internal/vfs"
)

// Incarnation returns the incarnation of this store's storage: a random
// non-zero number chosen when the directory was created (or first opened
// by a build with incarnations), and chosen anew when Open repaired
// damage. It is raft.Config.Incarnation.
func (s *Store) Incarnation() uint64 { return s.inc }

// newIncarnation draws a random non-zero incarnation.
func (s *Store) newIncarnation() (uint64, error) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(s.opts.Rand, b[:]); err != nil {
			return 0, fmt.Errorf("storage: draw an incarnation: %w", err)
		}
		if inc := binary.LittleEndian.Uint64(b[:]); inc != 0 {
			return inc, nil
		}
	}
}

// renewIncarnation makes a new incarnation durable (in VERSION) before
// anything the old one acknowledged is discarded.
func (s *Store) renewIncarnation() error {
	inc, err := s.newIncarnation()
	if err != nil {
		return err
	}
	if err := s.writeVersion(inc); err != nil {
		return fmt.Errorf("storage: record a new incarnation before repairing %s: %w", s.dir, err)
	}
	s.rec.Repaired, s.rec.OldIncarnation, s.rec.NewIncarnation = true, s.inc, inc
	s.inc = inc
	return nil
}

// assignIncarnation gives a new directory (or one written before
// incarnations existed) its incarnation, recorded in VERSION.
func (s *Store) assignIncarnation(upgrade bool) error {
	inc, err := s.newIncarnation()
	if err != nil {
		return err
	}
	if err := s.writeVersion(inc); err != nil {
		return err
	}
	s.inc = inc
	if upgrade {
		s.log.Info("data directory upgraded to format 2: assigned a storage incarnation", "dir", s.dir, "incarnation", fmt.Sprintf("%016x", inc))
	}
	return nil
}

// readVersion reads the VERSION file into s.inc (0 for format 1, which has
// no incarnation) and checks it; present is false if there is none.
func (s *Store) readVersion() (present bool, err error) {
	fs := s.opts.fs
	p := path.Join(s.dir, versionFile)
	f, err := fs.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open %s: %w", p, err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", p, err)
	}
	if size > 4096 {
		return false, fmt.Errorf("%w: %s is %d bytes, not a version file", ErrIncompatibleVersion, p, size)
	}
	b := make([]byte, size)
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read %s: %w", p, err)
	}
	var format, node, inc uint64
	var sawFormat, sawNode, sawInc bool
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "format":
			format, err = strconv.ParseUint(v, 10, 64)
			sawFormat = err == nil
		case "node":
			node, err = strconv.ParseUint(v, 10, 64)
			sawNode = err == nil
		case "incarnation":
			inc, err = strconv.ParseUint(v, 16, 64)
			sawInc = err == nil && inc != 0
		}
	}
	if !bytes.HasPrefix(b, []byte("capraft-storage\n")) || !sawFormat || !sawNode {
		return false, fmt.Errorf("%w: %s is not a capraft storage version file", ErrIncompatibleVersion, p)
	}
	if format != 1 && format != FormatVersion {
		return false, fmt.Errorf("%w: %s has format %d, this build reads formats 1 and %d", ErrIncompatibleVersion, s.dir, format, FormatVersion)
	}
	if format == FormatVersion && !sawInc {
		return false, fmt.Errorf("%w: %s has format %d but no valid incarnation line", ErrIncompatibleVersion, p, format)
	}
	if node != s.opts.NodeID {
		return false, fmt.Errorf("%w: %s belongs to node %d, not %d", ErrWrongNode, s.dir, node, s.opts.NodeID)
	}
	s.inc = inc
	return true, nil
}

// writeVersion atomically and durably (vfs.WriteFileAtomic) writes the
// VERSION file with incarnation inc.
func (s *Store) writeVersion(inc uint64) error {
	content := fmt.Sprintf("capraft-storage\nformat %d\nnode %d\nincarnation %016x\n", FormatVersion, s.opts.NodeID, inc)
	return vfs.WriteFileAtomic(s.opts.fs, path.Join(s.dir, versionFile), []byte(content))
}
