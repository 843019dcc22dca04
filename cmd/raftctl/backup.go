package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/capraft/capraft/client"
	"github.com/capraft/capraft/raftnode/backup"
)

// backupStall is how long `snapshot save` waits for the node to send
// anything before it gives up (the node itself gives up on a receiver
// after 30 s).
const backupStall = time.Minute

func snapshotSaveCommand(g *globals) *cobra.Command {
	var node uint64
	var force bool
	cmd := &cobra.Command{
		Use:   "save FILE",
		Short: "Save a backup of the cluster's state to FILE",
		Long: "save asks a node (the leader, or --node ID) for a snapshot of its state that covers every\n" +
			"write committed before the command, streams it into FILE and prints what it saved.\n" +
			"The file is written beside FILE and renamed into place only once its size and CRC-32C\n" +
			"match what the node announced and the whole backup verifies (raftctl snapshot status),\n" +
			"so an interrupted save leaves no FILE. An existing FILE is refused unless --force.\n" +
			"Progress goes to stderr when it is a terminal. --timeout bounds finding the node;\n" +
			"the transfer runs until done, interrupted, or the node sends nothing for 1m.\n" +
			"Restore a new cluster from FILE with raftnode restore (see docs/OPERATIONS.md).\n\n" +
			`JSON: {"file": string, "node": int, "index": int, "term": int, "revision": int,` + "\n" +
			`  "keys": int, "size": int, "checksum": string (CRC-32C, hex)}`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			c, err := g.connect(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer c.Close()
			fctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			id, addr, err := backupSource(fctx, c, node)
			cancel()
			if err != nil {
				return err
			}
			f, err := backup.Create(path, force)
			if err != nil {
				return err
			}
			ctx, stop := context.WithCancelCause(cmd.Context())
			defer stop(nil)
			sink := &saveSink{f: f, path: path, from: id, stall: time.AfterFunc(backupStall, func() {
				stop(fmt.Errorf("node %d sent nothing for %v", id, backupStall))
			})}
			defer sink.stall.Stop()
			if isTerminal(cmd.ErrOrStderr()) {
				sink.progress = cmd.ErrOrStderr()
			}
			_, err = c.SaveSnapshot(ctx, addr, sink)
			sink.done()
			if err != nil {
				f.Abort()
				if cause := context.Cause(ctx); cause != nil && cmd.Context().Err() == nil {
					err = fmt.Errorf("%w (%v)", err, cause)
				}
				return fmt.Errorf("save a backup from node %d at %s: %w; nothing was written to %s", id, addr, err, path)
			}
			sum, err := f.Commit()
			if err != nil {
				return fmt.Errorf("save a backup from node %d: %w; nothing was written to %s", id, err, path)
			}
			obj := map[string]any{"file": path, "node": id, "index": sum.Index, "term": sum.Term, "revision": sum.KV.Revision,
				"keys": sum.KV.Keys, "size": sum.FileSize, "checksum": fmt.Sprintf("%08x", sum.Checksum)}
			return g.emit(cmd, obj, func(w io.Writer) {
				fmt.Fprintf(w, "OK saved %s: snapshot at index %d (term %d) from node %d, revision %d, %d keys, %s\n",
					cell(path), sum.Index, sum.Term, id, sum.KV.Revision, sum.KV.Keys, sizeText(uint64(sum.FileSize)))
			})
		},
	}
	cmd.Flags().Uint64Var(&node, "node", 0, "save from this member (by id) instead of the leader")
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	return cmd
}

// backupSource returns the id and address of the member to save from:
// the given one, or the leader.
func backupSource(ctx context.Context, c *client.Client, id uint64) (uint64, string, error) {
	lead, members, err := c.Members(ctx)
	if err != nil {
		return 0, "", fmt.Errorf("find the node to save from: %w", err)
	}
	if id == 0 {
		if lead == 0 {
			return 0, "", errors.New("no leader is known (election in progress or quorum lost): retry, or save from a member with --node ID")
		}
		id = lead
	}
	for _, m := range members {
		if m.ID == id {
			return id, m.Address, nil
		}
	}
	ids := make([]string, len(members))
	for i, m := range members {
		ids[i] = fmt.Sprint(m.ID)
	}
	return 0, "", usagef("--node %d is not a member (members: %s)", id, strings.Join(ids, ", "))
}

// saveSink writes what the node streams into the backup file, showing
// progress.
type saveSink struct {
	f        *backup.File
	path     string
	from     uint64
	stall    *time.Timer
	progress io.Writer // nil: no progress shown

	mu    sync.Mutex
	size  uint64
	index uint64
	shown time.Time
	drawn bool
}

func (s *saveSink) Begin(info client.SnapshotInfo) error {
	s.stall.Reset(backupStall)
	s.mu.Lock()
	s.size, s.index = info.Size, info.Index
	s.mu.Unlock()
	return s.f.Begin(backup.Header{
		ClusterID: info.ClusterID, NodeID: info.NodeID, Version: info.Version, Index: info.Index, Term: info.Term,
		Voters: info.Voters, Learners: info.Learners, Size: info.Size, Checksum: info.Checksum, Created: info.Created,
	})
}

func (s *saveSink) Write(p []byte) error {
	s.stall.Reset(backupStall)
	if err := s.f.Write(p); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.progress != nil && (time.Since(s.shown) >= 100*time.Millisecond || s.f.Written() == s.size) {
		s.shown, s.drawn = time.Now(), true
		pct := 100.0
		if s.size > 0 {
			pct = float64(s.f.Written()) * 100 / float64(s.size)
		}
		fmt.Fprintf(s.progress, "\rsaving snapshot %d from node %d: %s of %s (%.0f%%)  ", s.index, s.from,
			sizeText(s.f.Written()), sizeText(s.size), pct)
	}
	return nil
}

// done ends the progress line.
func (s *saveSink) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drawn {
		fmt.Fprintln(s.progress)
		s.drawn = false
	}
}

// sizeText shows a size in bytes for people.
func sizeText(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

func snapshotStatusCommand(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status FILE",
		Short: "Verify and describe the backup in FILE",
		Long: "status reads the whole backup once and checks it as a restore would: the header, the\n" +
			"data's size and CRC-32C, the members' addresses and the key-value state. It prints what\n" +
			"the backup holds, or what is wrong with it (and exits 1).\n\n" +
			`JSON: {"file": string, "checksum_ok": true, "index": int, "term": int, "revision": int,` + "\n" +
			`  "keys": int, "sessions": int, "members": [{"id": int, "address": string, "learner": bool}],` + "\n" +
			`  "cluster_id": int, "node": int, "version": string, "created": string (RFC 3339),` + "\n" +
			`  "size": int, "data_size": int, "checksum": string (CRC-32C, hex)}`,
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			sum, err := backup.VerifyFile(path)
			if errors.Is(err, backup.ErrDamaged) {
				return fmt.Errorf("%w; it cannot be restored: use another backup, or save a new one with raftctl snapshot save", err)
			}
			if err != nil {
				return err
			}
			members := make([]map[string]any, len(sum.Members))
			for i, m := range sum.Members {
				members[i] = map[string]any{"id": m.ID, "address": m.Address, "learner": m.Learner}
			}
			obj := map[string]any{
				"file": path, "checksum_ok": true, "index": sum.Index, "term": sum.Term, "revision": sum.KV.Revision,
				"keys": sum.KV.Keys, "sessions": sum.KV.Sessions, "members": members, "cluster_id": sum.ClusterID,
				"node": sum.NodeID, "version": sum.Version, "created": sum.Created.UTC().Format(time.RFC3339),
				"size": sum.FileSize, "data_size": sum.Size, "checksum": fmt.Sprintf("%08x", sum.Checksum),
			}
			return g.emit(cmd, obj, func(w io.Writer) {
				var ms []string
				for _, m := range sum.Members {
					s := fmt.Sprintf("%d=%s", m.ID, cell(m.Address))
					if m.Learner {
						s += " (learner)"
					}
					ms = append(ms, s)
				}
				slices.Sort(ms)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintf(tw, "FILE\t%s\n", cell(path))
				fmt.Fprintf(tw, "CHECKSUM\tOK (CRC-32C %08x of %d bytes of data)\n", sum.Checksum, sum.Size)
				fmt.Fprintf(tw, "INDEX\t%d\n", sum.Index)
				fmt.Fprintf(tw, "TERM\t%d\n", sum.Term)
				fmt.Fprintf(tw, "REVISION\t%d\n", sum.KV.Revision)
				fmt.Fprintf(tw, "KEYS\t%d\n", sum.KV.Keys)
				fmt.Fprintf(tw, "SESSIONS\t%d\n", sum.KV.Sessions)
				fmt.Fprintf(tw, "MEMBERS\t%s\n", strings.Join(ms, ", "))
				fmt.Fprintf(tw, "CLUSTER ID\t%d\n", sum.ClusterID)
				fmt.Fprintf(tw, "FROM NODE\t%d (version %s)\n", sum.NodeID, cell(sum.Version))
				fmt.Fprintf(tw, "CREATED\t%s\n", sum.Created.UTC().Format(time.RFC3339))
				fmt.Fprintf(tw, "SIZE\t%s\n", sizeText(uint64(sum.FileSize)))
				tw.Flush()
			})
		},
	}
}
