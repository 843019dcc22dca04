package raftnode

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/hashicorp/go-hclog"

	"github.com/capraft/capraft/internal/durable"
	"github.com/capraft/capraft/raftnode/backup"
	"github.com/capraft/capraft/raftnode/driver"
	"github.com/capraft/capraft/raftnode/raft"
	"github.com/capraft/capraft/raftnode/storage"
)

// Disaster recovery: a new cluster seeded from a backup (raftctl snapshot
// save). Each member's data directory is restored from the same backup,
// offline, with the same --peers (as etcdutl snapshot restore does), and
// the members then start together. What each directory holds:
//
//   - the backup's state machine, whole (every key with its revisions, the
//     sessions, the token keys and revocations), as a snapshot at the
//     backup's index and term, with that index committed: every member
//     has the same snapshot, so they agree from the first entry on, and
//     the store's revision goes on from the backup's;
//   - a fresh membership: the --peers ids as voters, with the --peers
//     addresses. The old configuration and addresses are dropped, so the
//     new cluster never dials an old member. No storage incarnations are
//     recorded (each member's is drawn when its directory is made): the
//     first leader records them, as for a cluster that predates them;
//   - a new cluster identity: the CLUSTER file names the new cluster
//     (--cluster-name), which must differ from the backup's, and a node
//     refuses to start on the directory under another name. Peers refuse
//     messages from another cluster, so the restored members never take
//     messages from, or send them to, survivors of the old cluster.

// clusterFile names the file a restored data directory records its
// cluster in.
const clusterFile = "CLUSTER"

// clusterRecord is the CLUSTER file's content.
type clusterRecord struct {
	// Name is the cluster's name (Config.ClusterName).
	Name string `json:"cluster_name"`
	// RestoredFrom is the id of the cluster the backup came from, and
	// RestoredIndex the backup's index.
	RestoredFrom  uint64 `json:"restored_from_cluster_id"`
	RestoredIndex uint64 `json:"restored_index"`
}

// checkClusterFile refuses a data directory restored for another cluster
// than name. Directories without a CLUSTER file (not restored) pass.
func checkClusterFile(dir, name string) error {
	b, err := os.ReadFile(filepath.Join(dir, clusterFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", filepath.Join(dir, clusterFile), err)
	}
	var rec clusterRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Name == "" {
		return fmt.Errorf("%s is damaged (%v): it names the cluster this data directory was restored for; restore the directory again",
			filepath.Join(dir, clusterFile), err)
	}
	if rec.Name != name {
		return fmt.Errorf("data directory %s was restored from a backup for cluster %q: start this node with --cluster-name %q "+
			"(every member of the restored cluster needs it)", dir, rec.Name, rec.Name)
	}
	return nil
}

// RestoreConfig configures Restore.
type RestoreConfig struct {
	// Backup is the backup file (raftctl snapshot save).
	Backup string
	// DataDir is the new member's data directory: it must not exist, or
	// be empty.
	DataDir string
	// ID is the new member's id; Peers the new cluster's members (ID
	// included), the same for every member restored.
	ID    uint64
	Peers map[uint64]string
	// ClusterName names the new cluster; it must differ from the
	// backup's cluster.
	ClusterName string
	// Logger, if set, receives progress.
	Logger hclog.Logger
}

// Restore seeds the data directory of a new cluster's member from a
// backup (see above). It verifies the whole backup first and writes
// nothing if it fails a check; it writes the directory beside DataDir
// and renames it into place once complete, so an interrupted restore
// leaves no half-written data directory. It returns the backup's
// description.
func Restore(cfg RestoreConfig) (backup.Summary, error) {
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	switch {
	case cfg.ID == 0:
		return backup.Summary{}, errors.New("restore: the node id must be non-zero")
	case cfg.Peers[cfg.ID] == "":
		return backup.Summary{}, fmt.Errorf("restore: --peers must list every member of the new cluster, this node's id %d included", cfg.ID)
	case cfg.ClusterName == "":
		return backup.Summary{}, errors.New("restore: give the new cluster a name (--cluster-name)")
	case cfg.DataDir == "":
		return backup.Summary{}, errors.New("restore: give the new member's data directory (--data-dir)")
	}
	if err := checkEmptyDir(cfg.DataDir); err != nil {
		return backup.Summary{}, err
	}
	sum, err := backup.VerifyFile(cfg.Backup)
	if err != nil {
		if errors.Is(err, backup.ErrDamaged) {
			return backup.Summary{}, fmt.Errorf("restore: %w; nothing was written: restore from another backup", err)
		}
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	if ClusterID(cfg.ClusterName) == sum.ClusterID {
		return backup.Summary{}, fmt.Errorf("restore: the backup comes from a cluster named %q: give the new cluster another "+
			"--cluster-name, so its members never take messages from a survivor of the old cluster", cfg.ClusterName)
	}
	log.Info("backup verified", "index", sum.Index, "term", sum.Term, "revision", sum.KV.Revision, "keys", sum.KV.Keys)

	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	parent := filepath.Dir(abs)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: create %s: %w", parent, err)
	}
	tmp, err := os.MkdirTemp(parent, filepath.Base(abs)+".restoring-")
	if err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := restoreInto(tmp, cfg, sum.Header, log.Named("storage")); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	rec, err := json.Marshal(clusterRecord{Name: cfg.ClusterName, RestoredFrom: sum.ClusterID, RestoredIndex: sum.Index})
	if err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	if err := durable.WriteNewFile(filepath.Join(tmp, clusterFile), append(rec, '\n')); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	if err := durable.SyncDir(tmp); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	// An empty directory is replaced: os.Remove removes only an empty
	// one, and a rename fails if anything appeared there meanwhile.
	if err := os.Remove(abs); err != nil && !errors.Is(err, os.ErrNotExist) {
		return backup.Summary{}, fmt.Errorf("restore: replace the empty directory %s: %w", abs, err)
	}
	if err := os.Rename(tmp, abs); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: move the restored directory into place: %w", err)
	}
	done = true
	if err := durable.SyncDir(parent); err != nil {
		return backup.Summary{}, fmt.Errorf("restore: %w", err)
	}
	log.Info("data directory restored", "dir", abs, "id", cfg.ID, "members", slices.Sorted(maps.Keys(cfg.Peers)), "cluster", cfg.ClusterName)
	return sum, nil
}

// checkEmptyDir refuses a data directory that exists and holds anything.
func checkEmptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("restore: %w", err)
	case len(ents) > 0:
		return fmt.Errorf("restore: data directory %s is not empty: restore only into a new or empty directory "+
			"(move the old one aside first)", dir)
	}
	return nil
}

// restoreInto writes the new member's storage into dir: the backup's
// state machine under a new envelope, as a snapshot at the backup's
// index, committed.
func restoreInto(dir string, cfg RestoreConfig, want backup.Header, log hclog.Logger) error {
	store, err := storage.Open(dir, storage.Options{NodeID: cfg.ID, Logger: log})
	if err != nil {
		return fmt.Errorf("create the data directory: %w", err)
	}
	defer store.Close()
	f, err := os.Open(cfg.Backup)
	if err != nil {
		return err
	}
	defer f.Close()
	// The second pass checks the data again as it copies it (the file
	// could have changed since it was verified).
	h, data, err := backup.Data(f)
	if err != nil {
		return err
	}
	if h.Index != want.Index || h.Term != want.Term || h.Size != want.Size || h.Checksum != want.Checksum {
		return fmt.Errorf("%s changed while it was restored: restore again", cfg.Backup)
	}
	_, sm, err := driver.ReadSnapshotEnvelope(data)
	if err != nil {
		return fmt.Errorf("read the backup: %w", err)
	}
	voters := slices.Sorted(maps.Keys(cfg.Peers))
	meta := raft.SnapshotMeta{Index: h.Index, Term: h.Term, ConfState: raft.ConfState{Voters: voters}}
	w, err := store.ReceiveSnapshot(meta)
	if err != nil {
		return fmt.Errorf("create the snapshot: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	err = driver.WriteSnapshotEnvelope(bw, cfg.Peers)
	if err == nil {
		// The backup's data reader fails its last read if what it
		// read does not match the header's size and checksum.
		_, err = io.Copy(bw, sm)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = w.Commit()
	}
	if err != nil {
		w.Abort()
		return fmt.Errorf("write the snapshot: %w", err)
	}
	// The snapshot's index is committed: it is the state every member
	// starts from.
	hs := raft.HardState{Term: h.Term, Commit: h.Index}
	if err := store.Save(hs, nil, &raft.Snapshot{Meta: meta}); err != nil {
		return fmt.Errorf("install the snapshot: %w", err)
	}
	return store.Close()
}
