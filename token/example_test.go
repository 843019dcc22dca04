package token_test

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/capraft/capraft/token"
)

// An operator mints a client token confined to app/, a holder narrows it
// offline to read-only app/reports/ for a day, and a node verifies it.
func Example() {
	// The cluster's root key: in a cluster, 32 bytes from crypto/rand,
	// replicated through the log and named by a key id.
	rootKey := bytes.Repeat([]byte{0x42}, token.MinKeySize)
	const keyID = 1
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

	// Minting needs the root key. Use token.NewID() for a real token.
	minted, err := token.Mint(rootKey, keyID, token.ID{0x2a}, token.Client,
		token.Restriction{RestrictPrefix: true, Prefix: []byte("app/")})
	if err != nil {
		fmt.Println(err)
		return
	}

	// Attenuating needs only the token.
	narrowed, err := minted.Attenuate(token.Restriction{
		RestrictPrefix: true, Prefix: []byte("app/reports/"),
		ReadOnly: true,
		NotAfter: now.Add(24 * time.Hour),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	// It cannot be widened back.
	_, err = narrowed.Attenuate(token.Restriction{RestrictPrefix: true, Prefix: []byte("app/")})
	fmt.Println(err)

	// A node gets the text, parses it, and verifies it with the key it names.
	tok, err := token.Parse(narrowed.String())
	if err != nil {
		fmt.Println(err)
		return
	}
	g, err := tok.Verify(rootKey, now)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("key %d, token %s: %s, prefix %q, read-only %v, until %s\n", tok.KeyID(), g.ID, g.Role,
		g.Restriction.Prefix, g.Restriction.ReadOnly, g.Restriction.NotAfter.Format(time.RFC3339))

	// A day later it is no good.
	_, err = tok.Verify(rootKey, now.Add(25*time.Hour))
	fmt.Println(errors.Is(err, token.ErrExpired))
	// Output:
	// attenuate token 2a000000000000000000000000000000: a token can only be narrowed: prefix "app/" is not within the token's prefix "app/reports/"; give a prefix that starts with "app/reports/"
	// key 1, token 2a000000000000000000000000000000: client, prefix "app/reports/", read-only true, until 2026-05-02T12:00:00Z
	// true
}
