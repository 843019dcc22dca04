package rpc

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"runtime"
)

// The cluster secret challenge (Node.challenge and Node.login in
// schema/node.capnp): a member proves it holds the cluster secret, and
// the node proves it first, without the secret crossing the wire. Both
// proofs are HMAC-SHA256 under the secret over a domain-separation string
// and the challenge's values (integers 8 bytes big-endian), so a proof is
// good for one connection's nonces only and neither proof can stand in
// for the other.

// NonceSize is the size of both challenge nonces.
const NonceSize = 32

// MinSecretSize is the shortest cluster secret LoadClusterSecret accepts.
const MinSecretSize = 32

// maxSecretFile bounds what LoadClusterSecret reads.
const maxSecretFile = 4096

// Domain-separation strings of the two proofs.
const (
	nodeProofDomain   = "capraft-node-v1"
	memberProofDomain = "capraft-peer-v1"
)

// NodeProof is the node's answer to a challenge:
//
//	HMAC-SHA256(secret, "capraft-node-v1" || clusterID || nodeID || clientNonce || serverNonce)
//
// The nonces are concatenated without lengths, so both sides must check
// that each is NonceSize bytes (CheckNonce) before computing or trusting
// a proof.
func NodeProof(secret []byte, clusterID, nodeID uint64, clientNonce, serverNonce []byte) []byte {
	return proof(secret, nodeProofDomain, []uint64{clusterID, nodeID}, clientNonce, serverNonce)
}

// MemberProof is a member's proof of the secret, presented with login:
//
//	HMAC-SHA256(secret, "capraft-peer-v1" || clusterID || memberID || nodeID || clientNonce || serverNonce)
//
// where memberID is the member's node id and nodeID the id of the node it
// logs in to. Check the nonces with CheckNonce, and compare proofs with
// hmac.Equal (constant time).
func MemberProof(secret []byte, clusterID, memberID, nodeID uint64, clientNonce, serverNonce []byte) []byte {
	return proof(secret, memberProofDomain, []uint64{clusterID, memberID, nodeID}, clientNonce, serverNonce)
}

func proof(secret []byte, domain string, ids []uint64, clientNonce, serverNonce []byte) []byte {
	m := hmac.New(sha256.New, secret)
	var b [8]byte
	m.Write([]byte(domain))
	for _, id := range ids {
		binary.BigEndian.PutUint64(b[:], id)
		m.Write(b[:])
	}
	m.Write(clientNonce)
	m.Write(serverNonce)
	return m.Sum(nil)
}

// NewNonce returns NonceSize bytes from crypto/rand.
func NewNonce() []byte {
	n := make([]byte, NonceSize)
	// crypto/rand.Read never fails on supported platforms (Go 1.24: it
	// crashes the program rather than return an error).
	_, _ = rand.Read(n)
	return n
}

// CheckNonce reports an error unless n is a challenge nonce of NonceSize
// bytes.
func CheckNonce(n []byte) error {
	if len(n) != NonceSize {
		return fmt.Errorf("challenge nonce is %d bytes; want %d", len(n), NonceSize)
	}
	return nil
}

// secretHowTo says how to make a good cluster secret file.
const secretHowTo = "make one with: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE"

// LoadClusterSecret reads the cluster secret from the file at path: its
// content with surrounding white space trimmed, which must be at least
// MinSecretSize bytes (the file's bytes are the secret; a base64 text is
// not decoded). It refuses a file that its group or others may access,
// as ssh does a private key. Every member must hold the same secret.
func LoadClusterSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w (%s)", err, secretHowTo)
	}
	defer f.Close()
	// Check the file opened, not the path, so it cannot be swapped between.
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("cluster secret: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("cluster secret: %s is not a regular file (%s)", path, secretHowTo)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("cluster secret: %s is accessible by group or others (mode %04o); run: chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("cluster secret: read %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("cluster secret: %s is larger than %d bytes; is it the right file? (%s)", path, maxSecretFile, secretHowTo)
	}
	s := bytes.TrimSpace(b)
	if len(s) < MinSecretSize {
		return nil, fmt.Errorf("cluster secret: %s holds %d bytes; at least %d are needed (%s)", path, len(s), MinSecretSize, secretHowTo)
	}
	return s, nil
}
