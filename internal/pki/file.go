package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File modes of what Write writes: a certificate is public, a key is
// readable by its owner alone.
const (
	CertMode fs.FileMode = 0o644
	KeyMode  fs.FileMode = 0o600
)

// Write writes the CA's certificate to certPath and its key to keyPath
// (see WriteFile).
func (ca *CA) Write(certPath, keyPath string, overwrite bool) error {
	return writePair(certPath, ca.CertPEM, keyPath, ca.KeyPEM, overwrite)
}

// Write writes the certificate to certPath and its key to keyPath (see
// WriteFile).
func (kp *KeyPair) Write(certPath, keyPath string, overwrite bool) error {
	return writePair(certPath, kp.CertPEM, keyPath, kp.KeyPEM, overwrite)
}

// writePair writes the key first: a certificate on disk then always has
// its key beside it.
func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte, overwrite bool) error {
	if err := WriteFile(keyPath, keyPEM, KeyMode, overwrite); err != nil {
		return err
	}
	return WriteFile(certPath, certPEM, CertMode, overwrite)
}

// WriteFile writes data to path with mode perm (umask aside), so that a
// reader sees either no file (or the old one) or the whole new one, and a
// key is never readable by others, even for a moment. Unless overwrite, it
// refuses a path that exists with an error that wraps fs.ErrExist.
func WriteFile(path string, data []byte, perm fs.FileMode, overwrite bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	name := tmp.Name()
	defer os.Remove(name) // after a rename or link, removes nothing or the temporary name
	// CreateTemp makes the file 0600; Chmod widens a certificate's mode
	// before anything is visible under path.
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if overwrite {
		err = os.Rename(name, path)
	} else {
		// A hard link, unlike rename, fails if path exists.
		err = os.Link(name, path)
	}
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("write %s: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
