package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/cmd/internal/cli"
	"github.com/capraft/capraft/raftnode"
)

// restoreFlags are the flags of raftnode restore.
type restoreFlags struct {
	id          uint64
	dataDir     string
	peers       string
	clusterName string
	logLevel    string
}

// restoreCommand seeds a new cluster member's data directory from a
// backup. It lives in raftnode, not raftctl: it writes a node's data
// directory offline, in this build's storage format, with the same --id,
// --peers and --cluster-name the node then starts with (as etcdutl, not
// etcdctl, restores etcd).
func restoreCommand() *cobra.Command {
	var f restoreFlags
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Seed a new cluster member's data directory from a backup (raftctl snapshot save)",
		Long: "restore writes a new data directory for member --id of a NEW cluster from the backup in FILE:\n" +
			"every key with its revisions, a membership of the --peers (the old cluster's members and\n" +
			"addresses are dropped) and the new cluster's name, which must differ from the old one, so\n" +
			"the new members never talk to survivors of the old cluster. Run it once per member, with the\n" +
			"same FILE, --peers and --cluster-name, then start every member with those flags:\n\n" +
			"  raftnode restore backup.db --id 1 --data-dir data1 --cluster-name prod-2 --peers 1=10.0.0.1:7000,2=10.0.0.2:7000,3=10.0.0.3:7000\n" +
			"  raftnode --id 1 --data-dir data1 --cluster-name prod-2 --peers ... --listen 10.0.0.1:7000\n\n" +
			"The backup is verified whole before anything is written, and the directory is written beside\n" +
			"--data-dir and moved into place once complete. --data-dir must not exist or be empty.",
		Args:          cobra.ExactArgs(1),
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := cli.NewLogger("raftnode", f.logLevel, false, os.Stderr)
			if err != nil {
				return err
			}
			var errs []error
			if f.id == 0 {
				errs = append(errs, errors.New("--id: give the id of the member this directory is for, e.g. --id 1"))
			}
			peers, err := parsePeers(f.peers)
			switch {
			case err != nil:
				errs = append(errs, err)
			case len(peers) == 0:
				errs = append(errs, errors.New("--peers: list every member of the new cluster, e.g. --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003"))
			case f.id != 0 && peers[f.id] == "":
				errs = append(errs, fmt.Errorf("--peers does not list this member's --id %d", f.id))
			}
			if f.dataDir == "" {
				errs = append(errs, errors.New("--data-dir: give the new member's data directory"))
			}
			if strings.TrimSpace(f.clusterName) == "" {
				errs = append(errs, errors.New("--cluster-name: give the new cluster a name other than the old one's, e.g. --cluster-name capraft-restored"))
			}
			if err := errors.Join(errs...); err != nil {
				return err
			}
			sum, err := raftnode.Restore(raftnode.RestoreConfig{
				Backup: args[0], DataDir: f.dataDir, ID: f.id, Peers: peers, ClusterName: f.clusterName, Logger: log,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "OK restored %s into %s for member %d of cluster %q: snapshot at index %d, revision %d, %d keys\n"+
				"start it with: raftnode --id %d --data-dir %s --cluster-name %s --peers %s (and its --listen)\n",
				args[0], f.dataDir, f.id, f.clusterName, sum.Index, sum.KV.Revision, sum.KV.Keys,
				f.id, f.dataDir, f.clusterName, f.peers)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.Uint64Var(&f.id, "id", 0, "the id of the member this data directory is for (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "the new member's data directory: must not exist, or be empty (required)")
	fl.StringVar(&f.peers, "peers", "", "every member of the new cluster, id=host:port,..., the same for each member restored (required)")
	fl.StringVar(&f.clusterName, "cluster-name", "", "the new cluster's name, other than the backed-up cluster's (required; give it to every member at start)")
	fl.StringVar(&f.logLevel, "log-level", "warn", "log level: "+cli.LogLevels)
	return cmd
}
