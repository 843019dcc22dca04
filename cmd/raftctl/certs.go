package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/internal/pki"
	"github.com/capraft/capraft/rpc"
)

const defaultCertNodes = "1=127.0.0.1,2=127.0.0.1,3=127.0.0.1"

// newCertsCommand returns `raftctl certs`, which makes a CA and the
// certificates of a test or development cluster. It needs no endpoint.
func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a CA and certificates for a cluster's mutual TLS",
		Long: "certs makes the certificates a cluster needs for mutual TLS: a cluster CA, a\n" +
			"certificate for each node (role peer) and, if asked, for an operator and a client.\n" +
			"A certificate's role is its Subject OU: peer, operator or client. A node's certificate\n" +
			"names its node id as the URI SAN capraft:node:ID; it speaks for that member alone.\n" +
			"It talks to no node. For production, issue certificates from your own CA the same way.",
		Args: exactArgs(0, "none"),
		// Replaces the root's check, which is of endpoints certs does not use.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if output, _ := cmd.Flags().GetString("output"); output != "" && output != "table" && output != "json" {
				return usagef("unknown output format %q: use -o table or -o json", output)
			}
			return nil
		},
	}
	cmd.AddCommand(certsCreateCommand())
	return cmd
}

// certsOptions are the flags of `certs create`.
type certsOptions struct {
	dir              string
	nodes            []string
	operator, client bool
	validity         time.Duration
	force            bool
	caCert, caKey    string
}

// certFile is one certificate certs create makes, and its files.
type certFile struct {
	kind     string // "ca", "node", "operator", "client"
	node     uint64 // for kind "node"
	name     string // file name without .pem
	hosts    []string
	certPEM  []byte
	keyPEM   []byte
	notAfter time.Time
}

func (f certFile) certPath(dir string) string { return filepath.Join(dir, f.name+".pem") }
func (f certFile) keyPath(dir string) string  { return filepath.Join(dir, f.name+"-key.pem") }

func certsCreateCommand() *cobra.Command {
	o := &certsOptions{}
	cmd := &cobra.Command{
		Use:   "create --dir DIR",
		Short: "Write a CA and node, operator and client certificates to DIR",
		Long: "create makes a cluster CA (ca.pem, ca-key.pem) and a certificate and key for each\n" +
			"node of --nodes (nodeN.pem, nodeN-key.pem; role peer, node id N, valid as a server\n" +
			"for the hosts given), and with --operator and --client an operator (operator.pem) and a\n" +
			"client (client.pem) certificate. Keys are written mode 0600. It refuses to\n" +
			"overwrite a file unless --force. With --ca-cert and --ca-key it issues from an\n" +
			"existing CA instead of making one (to add a node, say).\n\n" +
			"--nodes takes ID=HOST pairs, HOST an IP address or DNS name the node is reached\n" +
			"at; repeat an ID for more names: --nodes 1=10.0.0.1,1=node1.example.\n\n" +
			`JSON: {"dir": string, "files": [{"kind": "ca"|"node"|"operator"|"client",` + "\n" +
			`  "node": int (nodes only), "cert": string, "key": string, "hosts": [string],` + "\n" +
			`  "expires": string (RFC 3339)}, ...]}`,
		Example: "  raftctl certs create --dir certs --operator --client\n" +
			"  raftctl certs create --dir certs --nodes 1=10.0.0.1,2=10.0.0.2,3=10.0.0.3 --operator\n" +
			"  raftctl certs create --dir certs --ca-cert certs/ca.pem --ca-key certs/ca-key.pem --nodes 4=10.0.0.4",
		Args: exactArgs(0, "none"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return createCerts(cmd, o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.dir, "dir", "", "directory to write the files to (created, mode 0700, if missing)")
	fl.StringSliceVar(&o.nodes, "nodes", strings.Split(defaultCertNodes, ","), "node certificates to make, as ID=HOST,... (HOST: IP address or DNS name; empty: none)")
	fl.BoolVar(&o.operator, "operator", false, "also make an operator certificate (operator.pem): membership, tokens and everything a client may do")
	fl.BoolVar(&o.client, "client", false, "also make a client certificate (client.pem): kv, echo and status")
	fl.DurationVar(&o.validity, "validity", 8760*time.Hour, "how long the certificates (and a new CA) are valid")
	fl.BoolVar(&o.force, "force", false, "replace files that exist")
	fl.StringVar(&o.caCert, "ca-cert", "", "issue from this existing CA certificate (PEM) instead of making a CA; needs --ca-key")
	fl.StringVar(&o.caKey, "ca-key", "", "the private key (PEM) of --ca-cert")
	return cmd
}

func createCerts(cmd *cobra.Command, o *certsOptions) error {
	if o.dir == "" {
		return usagef("certs create needs --dir DIR, the directory to write the certificates to")
	}
	if o.validity <= 0 {
		return usagef("--validity %v: give a positive duration, e.g. 8760h", o.validity)
	}
	if (o.caCert == "") != (o.caKey == "") {
		return usagef("--ca-cert and --ca-key go together: give both or neither")
	}
	nodes, err := parseCertNodes(o.nodes)
	if err != nil {
		return err
	}
	if len(nodes) == 0 && !o.operator && !o.client {
		return usagef("nothing to make: give --nodes, --operator or --client")
	}

	// Make everything in memory first: a bad host or CA is reported
	// before any file is written.
	ca, files, err := loadOrMakeCA(o)
	if err != nil {
		return err
	}
	caPath := o.caCert
	if caPath == "" {
		caPath = files[0].certPath(o.dir)
	}
	issue := func(kind string, role rpc.Role, node uint64, name string, hosts []string) error {
		// A node's certificate names its id: its peers then take its
		// Raft messages from that id alone.
		kp, err := ca.IssueSpec(pki.Spec{CommonName: name, Roles: []string{role.String()}, Hosts: hosts, NodeID: node,
			NotAfter: time.Now().Add(o.validity)})
		if err != nil {
			return fmt.Errorf("%s certificate: %w", name, err)
		}
		files = append(files, certFile{kind: kind, node: node, name: name, hosts: hosts,
			certPEM: kp.CertPEM, keyPEM: kp.KeyPEM, notAfter: kp.Cert.NotAfter})
		return nil
	}
	for _, n := range nodes {
		if err := issue("node", rpc.RolePeer, n.id, "node"+strconv.FormatUint(n.id, 10), n.hosts); err != nil {
			return err
		}
	}
	if o.operator {
		if err := issue("operator", rpc.RoleOperator, 0, "operator", nil); err != nil {
			return err
		}
	}
	if o.client {
		if err := issue("client", rpc.RoleClient, 0, "client", nil); err != nil {
			return err
		}
	}

	if err := writeCertFiles(o.dir, files, o.force); err != nil {
		return err
	}
	return reportCerts(cmd, o.dir, caPath, files)
}

// loadOrMakeCA returns the CA to issue from and, for a new CA, its files
// to write (first in the list).
func loadOrMakeCA(o *certsOptions) (*pki.CA, []certFile, error) {
	if o.caCert != "" {
		certPEM, err := os.ReadFile(o.caCert)
		if err != nil {
			return nil, nil, fmt.Errorf("--ca-cert: %w", err)
		}
		keyPEM, err := os.ReadFile(o.caKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--ca-key: %w", err)
		}
		ca, err := pki.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("--ca-cert %s, --ca-key %s: %w", o.caCert, o.caKey, err)
		}
		return ca, nil, nil
	}
	ca, err := pki.NewCA("capraft CA "+time.Now().UTC().Format("2006-01-02T15:04:05Z"), o.validity)
	if err != nil {
		return nil, nil, err
	}
	return ca, []certFile{{kind: "ca", name: "ca", certPEM: ca.CertPEM, keyPEM: ca.KeyPEM, notAfter: ca.Cert.NotAfter}}, nil
}

// certNode is a node of --nodes: its id and hosts.
type certNode struct {
	id    uint64
	hosts []string
}

// parseCertNodes parses --nodes ID=HOST,... into nodes in first-seen
// order, an ID repeated adding hosts.
func parseCertNodes(entries []string) ([]certNode, error) {
	var nodes []certNode
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		idText, host, ok := strings.Cut(e, "=")
		id, err := strconv.ParseUint(idText, 10, 64)
		if !ok || err != nil || id == 0 || host == "" {
			return nil, usagef("--nodes %q: want ID=HOST with ID a node id (1, 2, ...) and HOST its IP address or DNS name, e.g. %s",
				e, defaultCertNodes)
		}
		if strings.Contains(host, ":") && net.ParseIP(host) == nil {
			return nil, usagef("--nodes %q: give the host without a port (a certificate names hosts, not ports)", e)
		}
		i := slices.IndexFunc(nodes, func(n certNode) bool { return n.id == id })
		if i < 0 {
			nodes = append(nodes, certNode{id: id})
			i = len(nodes) - 1
		}
		if !slices.Contains(nodes[i].hosts, host) {
			nodes[i].hosts = append(nodes[i].hosts, host)
		}
	}
	return nodes, nil
}

// writeCertFiles writes every file, after checking that none exists
// (unless force), so a refusal leaves the directory as it was.
func writeCertFiles(dir string, files []certFile, force bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if !force {
		var exist []string
		for _, f := range files {
			for _, p := range []string{f.certPath(dir), f.keyPath(dir)} {
				if _, err := os.Lstat(p); err == nil {
					exist = append(exist, p)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return err
				}
			}
		}
		if len(exist) > 0 {
			return fmt.Errorf("refusing to overwrite %s (they exist; pass --force to replace them, or choose another --dir)",
				strings.Join(exist, ", "))
		}
	}
	for _, f := range files {
		kp := pki.KeyPair{CertPEM: f.certPEM, KeyPEM: f.keyPEM}
		if err := kp.Write(f.certPath(dir), f.keyPath(dir), force); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%w (it appeared while writing; pass --force to replace it)", err)
			}
			return err
		}
	}
	return nil
}

// reportCerts prints what was written, what each file is for and the
// flags that use them.
func reportCerts(cmd *cobra.Command, dir, caPath string, files []certFile) error {
	w := cmd.OutOrStdout()
	if output, _ := cmd.Flags().GetString("output"); output == "json" {
		list := make([]map[string]any, len(files))
		for i, f := range files {
			obj := map[string]any{"kind": f.kind, "cert": f.certPath(dir), "key": f.keyPath(dir),
				"hosts": f.hosts, "expires": f.notAfter.UTC().Format(time.RFC3339)}
			if f.hosts == nil {
				obj["hosts"] = []string{}
			}
			if f.kind == "node" {
				obj["node"] = f.node
			}
			list[i] = obj
		}
		return newJSONEncoder(w).Encode(map[string]any{"dir": dir, "files": list})
	}

	fmt.Fprintf(w, "Wrote to %s (keys readable by you alone):\n", dir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  FILES\tFOR\tVALID UNTIL")
	for _, f := range files {
		fmt.Fprintf(tw, "  %s.pem, %s-key.pem\t%s\t%s\n", f.name, f.name, certPurpose(f), f.notAfter.UTC().Format(time.RFC3339))
	}
	_ = tw.Flush()

	fmt.Fprintln(w)
	var operator, client *certFile
	for i, f := range files {
		switch f.kind {
		case "ca":
			fmt.Fprintf(w, "Keep %s offline: it is needed only to issue more certificates (--ca-cert %s --ca-key %s).\n",
				f.keyPath(dir), f.certPath(dir), f.keyPath(dir))
		case "node":
			fmt.Fprintf(w, "Start node %d with:  raftnode --id %d --tls-cert %s --tls-key %s --tls-ca %s ...\n",
				f.node, f.node, f.certPath(dir), f.keyPath(dir), caPath)
		case "operator":
			operator = &files[i]
		case "client":
			client = &files[i]
		}
	}
	for _, f := range []*certFile{operator, client} {
		if f != nil {
			fmt.Fprintf(w, "Use the %s certificate:  raftctl --tls-ca %s --cert %s --key %s ...\n",
				f.kind, caPath, f.certPath(dir), f.keyPath(dir))
		}
	}
	if operator == nil && client == nil {
		fmt.Fprintf(w, "For raftctl, make an operator or client certificate (--operator, --client, with --ca-cert %s)\n"+
			"or log in with a token (raftctl --token-file); verify the nodes with raftctl --tls-ca %s.\n", caPath, caPath)
	}
	return nil
}

// certPurpose says what a certificate is for, for the table.
func certPurpose(f certFile) string {
	switch f.kind {
	case "ca":
		return "cluster CA: --tls-ca of every node and of raftctl"
	case "node":
		return fmt.Sprintf("node %d (peer), serves %s", f.node, strings.Join(f.hosts, " "))
	case "operator":
		return "operator: admin (members, snapshots, tokens) and all a client may do"
	case "client":
		return "client: kv, echo, status"
	}
	return f.kind
}
