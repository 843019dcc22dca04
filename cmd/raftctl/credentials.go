package main

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/token"
)

// Where raftctl finds its credentials: a token (--token, --token-file, or
// their environment variables) and a client certificate (--cert, --key).
const (
	envToken     = "RAFTCTL_TOKEN"
	envTokenFile = "RAFTCTL_TOKEN_FILE"
)

// exitPermissionDenied is raftctl's exit status when a node refused the
// credential (or its absence): EX_NOPERM of sysexits.h. Every other
// failure exits 1.
const exitPermissionDenied = 77

// credentials holds the credential flags.
type credentials struct {
	tokenArg  string
	tokenFile string
	cert, key string

	// Which token flags the command line gave (noteFlags).
	tokenFlag, fileFlag bool

	// Set by token: the token to log in with ("" for none), where it came
	// from ("--token-file F", for messages) and any error.
	resolved  bool
	tok       string
	tokenFrom string
	err       error
}

// noteFlags records which credential flags cmd's command line set.
func (cr *credentials) noteFlags(cmd *cobra.Command) {
	cr.tokenFlag, cr.fileFlag = cmd.Flags().Changed("token"), cmd.Flags().Changed("token-file")
}

// token returns the token to log in with ("" for none), found and checked
// on the first call: commands that connect to no node never look.
func (cr *credentials) token() (string, error) {
	if !cr.resolved {
		cr.resolved = true
		cr.err = cr.resolveToken()
	}
	return cr.tok, cr.err
}

func (cr *credentials) addFlags(cmd *cobra.Command) {
	pf := cmd.PersistentFlags()
	pf.StringVar(&cr.tokenArg, "token", "", "log in with token `T` (default $"+envToken+"); prefer --token-file: a command line is visible to other users")
	pf.StringVar(&cr.tokenFile, "token-file", "", "log in with the token in file `F` (default $"+envTokenFile+")")
	pf.StringVar(&cr.cert, "cert", "", "PEM client certificate `F` for mutual TLS (with --key; implies --tls)")
	pf.StringVar(&cr.key, "key", "", "PEM private key `F` of --cert")
}

// maxTokenFile bounds what raftctl reads from a token file or stdin: a
// token is far smaller.
const maxTokenFile = 64 << 10

// resolveToken finds the token: --token or --token-file if either is
// given, else $RAFTCTL_TOKEN or $RAFTCTL_TOKEN_FILE. Giving both at one
// level is a mistake, as is a token file that is missing or empty.
func (cr *credentials) resolveToken() error {
	tokenSet, fileSet := cr.tokenFlag, cr.fileFlag
	text, file := cr.tokenArg, cr.tokenFile
	tokenName, fileName := "--token", "--token-file"
	if !tokenSet && !fileSet {
		text, file = os.Getenv(envToken), os.Getenv(envTokenFile)
		tokenSet, fileSet = text != "", file != ""
		tokenName, fileName = "$"+envToken, "$"+envTokenFile
	}
	switch {
	case tokenSet && fileSet:
		return usagef("both %s and %s are set; give the token one way", tokenName, fileName)
	case tokenSet:
		if text = strings.TrimSpace(text); text == "" {
			return usagef("%s is empty; give a token (raftctl token create prints one)", tokenName)
		}
		cr.tok, cr.tokenFrom = text, tokenName
	case fileSet:
		t, err := readTokenFile(fileName, file)
		if err != nil {
			return err
		}
		cr.tok, cr.tokenFrom = t, fileName+" "+file
	default:
		return nil
	}
	// Checked here to say where the token came from. The error never
	// shows the token.
	if _, err := token.Parse(cr.tok); err != nil {
		return fmt.Errorf("%s: %w", cr.tokenFrom, err)
	}
	return nil
}

// readTokenFile reads the token in file, named by flag, trimmed of white
// space around it.
func readTokenFile(flag, file string) (string, error) {
	if file == "" {
		return "", usagef("%s is empty; give the path of a file holding a token", flag)
	}
	f, err := os.Open(file)
	if err != nil {
		return "", usagef("%s: %v", flag, err)
	}
	defer f.Close()
	t, err := readToken(f)
	if err != nil {
		return "", usagef("%s %s: %v", flag, file, err)
	}
	return t, nil
}

// readToken reads one token from r: all of it, trimmed of white space
// around it, refusing nothing and too much.
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenFile+1))
	switch {
	case err != nil:
		return "", err
	case len(b) > maxTokenFile:
		return "", fmt.Errorf("over %d KiB: a token file holds one token", maxTokenFile>>10)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", errors.New("empty: it holds no token (raftctl token create prints one)")
	}
	return string(b), nil
}

// certificate loads the client certificate, if one is given.
func (cr *credentials) certificate() ([]tls.Certificate, error) {
	if cr.cert == "" && cr.key == "" {
		return nil, nil
	}
	if cr.cert == "" || cr.key == "" {
		return nil, usagef("--cert and --key go together: give the client certificate and its private key")
	}
	pair, err := tls.LoadX509KeyPair(cr.cert, cr.key)
	if err != nil {
		return nil, usagef("--cert %s, --key %s: %v", cr.cert, cr.key, err)
	}
	return []tls.Certificate{pair}, nil
}

// permissionHint says what to pass when a node refused the credential.
func (cr *credentials) permissionHint(certGiven bool) string {
	switch {
	case cr.tokenFrom != "":
		return "the token from " + cr.tokenFrom + " was refused or does not grant this: raftctl token inspect shows what it says, " +
			"raftctl whoami what a node grants it; an operator can mint one that grants this with raftctl token create"
	case certGiven:
		return "the certificate from --cert does not grant this; pass a token that does with --token-file F (or $" + envTokenFile + ")"
	}
	return "pass a token with --token-file F or --token T (or $" + envTokenFile + ", $" + envToken + "), or a client certificate with --cert and --key"
}
