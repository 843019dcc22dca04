package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
)

// runCerts runs `raftctl certs create args...` in process, through the
// root command (registering certs on it if main does not yet).
func runCerts(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	root, _ := newRoot(&stdout, &stderr)
	if c, _, err := root.Find([]string{"certs"}); err != nil || c == root {
		root.AddCommand(newCertsCommand())
	}
	root.SetArgs(append([]string{"certs", "create"}, args...))
	err := root.ExecuteContext(context.Background())
	return stdout.String(), err
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func loadPair(t *testing.T, dir, name string) (tls.Certificate, *x509.Certificate) {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return c, c.Leaf
}

// handshake runs a mutual TLS handshake in memory between a node serving
// server and a client presenting client, as a node and raftctl would,
// and returns the role the node sees.
func handshake(t *testing.T, pool *x509.CertPool, server, client tls.Certificate, serverName string) (rpc.Role, error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, rpc.ServerTLS(server, pool))
	cfg := rpc.ClientTLS(pool, &client)
	cfg.ServerName = serverName
	cl := tls.Client(b, cfg)
	done := make(chan error, 1)
	go func() {
		err := cl.Handshake()
		if err == nil {
			// TLS 1.3: the server checks the client's certificate after the
			// client is done; wait for its verdict (or its first bytes).
			_, err = cl.Read(make([]byte, 1))
		}
		done <- err
	}()
	if err := srv.Handshake(); err != nil {
		return rpc.RoleNone, err
	}
	st := srv.ConnectionState()
	role, _, _ := (&rpc.ConnInfo{TLS: &st}).Certificate()
	_, _ = srv.Write([]byte{1})
	return role, <-done
}

func TestCertsCreateWritesAClusterPKIThatWorks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	out, err := runCerts(t, "--dir", dir, "--operator", "--client")
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"ca", "node1", "node2", "node3", "operator", "client"}
	for _, n := range names {
		for file, mode := range map[string]os.FileMode{n + ".pem": 0o644, n + "-key.pem": 0o600} {
			st, err := os.Stat(filepath.Join(dir, file))
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v", file, st.Mode().Perm(), mode)
			}
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("directory: %v, %v; want mode 0700", st.Mode(), err)
	}
	for _, want := range []string{
		"--tls-cert " + filepath.Join(dir, "node2.pem") + " --tls-key " + filepath.Join(dir, "node2-key.pem") + " --tls-ca " + filepath.Join(dir, "ca.pem"),
		"--cert " + filepath.Join(dir, "operator.pem") + " --key " + filepath.Join(dir, "operator-key.pem"),
		"--cert " + filepath.Join(dir, "client.pem") + " --key " + filepath.Join(dir, "client-key.pem"),
		"raftnode --id 3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}

	ca, err := pki.LoadCA(readFile(t, filepath.Join(dir, "ca.pem")), readFile(t, filepath.Join(dir, "ca-key.pem")))
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	node1, leaf := loadPair(t, dir, "node1")
	if role := rpc.CertificateRole(leaf); role != rpc.RolePeer {
		t.Errorf("node1 role %v", role)
	}
	// Each node's certificate names its node id, so its peers bind its
	// Raft messages to it; the others name none.
	for name, want := range map[string]uint64{"node1": 1, "node2": 2, "node3": 3, "operator": 0, "client": 0} {
		_, leaf := loadPair(t, dir, name)
		id, ok, err := rpc.CertificateNodeID(leaf)
		if err != nil || id != want || ok != (want != 0) {
			t.Errorf("%s names node id %d (%v, %v), want %d", name, id, ok, err, want)
		}
	}
	for name, want := range map[string]rpc.Role{"node2": rpc.RolePeer, "operator": rpc.RoleOperator, "client": rpc.RoleClient} {
		cert, _ := loadPair(t, dir, name)
		role, err := handshake(t, pool, node1, cert, "127.0.0.1")
		if err != nil {
			t.Fatalf("%s to node1: %v", name, err)
		}
		if role != want {
			t.Errorf("%s: node1 sees role %v, want %v", name, role, want)
		}
	}
	// A client certificate cannot serve: a node needs its node certificate.
	client, _ := loadPair(t, dir, "client")
	if _, err := handshake(t, pool, client, node1, "127.0.0.1"); err == nil {
		t.Error("a client certificate served TLS")
	}
}

func TestCertsCreateRefusesToOverwriteUnlessForced(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCerts(t, "--dir", dir, "--nodes", "1=127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	caKey := readFile(t, filepath.Join(dir, "ca-key.pem"))
	_, err := runCerts(t, "--dir", dir, "--nodes", "1=127.0.0.1", "--client")
	if err == nil {
		t.Fatal("existing files overwritten without --force")
	}
	for _, want := range []string{"refusing to overwrite", filepath.Join(dir, "ca-key.pem"), filepath.Join(dir, "node1.pem"), "--force"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "client.pem")); err == nil {
		t.Error("a refused run wrote client.pem")
	}
	if !bytes.Equal(readFile(t, filepath.Join(dir, "ca-key.pem")), caKey) {
		t.Error("a refused run changed ca-key.pem")
	}

	if _, err := runCerts(t, "--dir", dir, "--nodes", "1=127.0.0.1", "--client", "--force"); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFile(t, filepath.Join(dir, "ca-key.pem")), caKey) {
		t.Error("--force did not replace ca-key.pem")
	}
}

func TestCertsCreateIssuesFromAnExistingCA(t *testing.T) {
	first := t.TempDir()
	if _, err := runCerts(t, "--dir", first, "--nodes", "1=127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	caPath, caKeyPath := filepath.Join(first, "ca.pem"), filepath.Join(first, "ca-key.pem")
	second := t.TempDir()
	out, err := runCerts(t, "--dir", second, "--ca-cert", caPath, "--ca-key", caKeyPath,
		"--nodes", "4=10.0.0.4,4=node4.example", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Dir   string
		Files []struct {
			Kind, Cert, Key, Expires string
			Node                     uint64
			Hosts                    []string
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out)
	}
	if got.Dir != second || len(got.Files) != 1 || got.Files[0].Kind != "node" || got.Files[0].Node != 4 ||
		!slices.Equal(got.Files[0].Hosts, []string{"10.0.0.4", "node4.example"}) || got.Files[0].Expires == "" {
		t.Errorf("JSON %+v", got)
	}
	entries, _ := os.ReadDir(second)
	if len(entries) != 2 {
		t.Errorf("%d files written, want node4.pem and node4-key.pem", len(entries))
	}
	_, leaf := loadPair(t, second, "node4")
	ca, err := pki.LoadCA(readFile(t, caPath), readFile(t, caKeyPath))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"10.0.0.4", "node4.example"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("node4 for %s: %v", host, err)
		}
	}
}

func TestCertsCreateNeedsNoEndpoints(t *testing.T) {
	t.Setenv("RAFTCTL_ENDPOINTS", "not an endpoint")
	if _, err := runCerts(t, "--dir", t.TempDir(), "--client", "--nodes", ""); err != nil {
		t.Fatal(err)
	}
}

func TestCertsCreateRefusesBadFlagsAndWritesNothing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--dir", dir, "-o", "yaml"}, "unknown output format"},
		{nil, "needs --dir"},
		{[]string{"--dir", dir, "--nodes", "x=127.0.0.1"}, "ID=HOST"},
		{[]string{"--dir", dir, "--nodes", "0=127.0.0.1"}, "ID=HOST"},
		{[]string{"--dir", dir, "--nodes", "1="}, "ID=HOST"},
		{[]string{"--dir", dir, "--nodes", "127.0.0.1"}, "ID=HOST"},
		{[]string{"--dir", dir, "--nodes", "1=127.0.0.1:7001"}, "without a port"},
		{[]string{"--dir", dir, "--nodes", "1=bad/host"}, "neither an IP address nor a DNS name"},
		{[]string{"--dir", dir, "--nodes", ""}, "nothing to make"},
		{[]string{"--dir", dir, "--validity", "-1h"}, "--validity"},
		{[]string{"--dir", dir, "--ca-cert", "ca.pem"}, "go together"},
		{[]string{"--dir", dir, "--ca-cert", filepath.Join(dir, "none.pem"), "--ca-key", "k"}, "--ca-cert"},
	}
	for _, c := range cases {
		_, err := runCerts(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("certs create %q: error %v, want one saying %q", c.args, err, c.want)
		}
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("a refused command created the directory")
	}
}
