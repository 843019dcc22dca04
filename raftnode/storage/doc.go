// Package storage is the durable raft.Storage of a node: a segmented,
// checksummed write-ahead log (package wal) and a snapshot store (package
// snap) in one data directory, written through a small file-system layer
// (package vfs) that tests replace with a crash simulator (package crashfs).
// It knows nothing of the network.
//
// # Driving it
//
// The node's driver, for each Raft Ready, in order:
//
//	store.Save(rd.HardState, rd.Entries, snapOrNil) // one durable write; durable on return
//	// ... send messages that depend on it, then core.Advance()
//
// Save is the only write path for the log. It writes the snapshot file (if
// any), then appends the snapshot reference, the entries and the hard state
// to the log and fsyncs once. Entries may start at any index in
// (FirstIndex-1, LastIndex+1]: an entry at an index already present replaces
// the log from there on (a follower dropping a conflicting suffix). Calls
// from several goroutines are grouped into one write and one fsync (group
// commit); the driver normally calls it from one goroutine.
//
// The application takes snapshots as streams: NewSnapshot(index,
// confState) returns a writer its state is written into (index committed
// and still in the log), without the store's lock held, so the node's loop
// goes on meanwhile; Commit makes it durable and the newest; then Compact(index)
// keeps Options.TrailingEntries entries before index for slow followers and
// deletes whole log segments nobody needs any more. CreateSnapshot does the
// same with data in memory. Snapshot (raft.Storage) reads no data, only the
// newest snapshot's metadata: the core needs no more. OpenSnapshot reads one
// snapshot's data in one sequential pass that checks its checksum as it
// reaches the end (each byte read once), to send it to a follower or restore
// from it; LoadSnapshot reads a small one into memory. A snapshot from the
// leader is received with ReceiveSnapshot (chunked Writer) and takes effect
// when the core hands its metadata back in a Ready and the driver passes it
// to Save, which finds the file already there.
//
// # Guarantees
//
//   - Nothing is reported durable before the fsync covering it returns (in
//     direct mode: the O_DSYNC write, which is durable on return); a
//     new segment file, a renamed snapshot and removals are followed by an
//     fsync of their directory.
//   - After a crash the log is exactly a prefix of what was written: every
//     Save that returned nil is there in full, the Save in flight is there as
//     some prefix of its records (snapshot reference, entries, hard state —
//     in that order), and the hard state never goes backwards.
//   - Recovery checks every record's checksum. Close records a clean stop
//     (where the log ends; see package wal), removed again before the next
//     write. After a crash, the only damage recovery repairs by itself is a
//     torn final record of the last segment (logged as a warning): one that
//     runs past the end of the file, or whose header or payload fails its
//     checksum with only zeros after it and the look of unwritten space (a
//     zero tail or an all-zero sector). That record was never
//     acknowledged, so the store keeps its incarnation. Everything else is
//     damage: a bad checksum anywhere after a clean stop (the final record
//     included), a lost suffix after a clean stop (the log ends before the
//     marker says), a bad checksum before the final record, a missing
//     segment, an index gap, a log that starts after the newest valid
//     snapshot, a data directory whose log is gone. Open fails with
//     ErrDamaged, naming the file and offset, and saying that a node with
//     peers repairs itself.
//   - With Options.Repair, damage is repaired instead, in this order: a new
//     incarnation is made durable (the store may have lost entries or votes
//     it acknowledged, so it must not count as the voter it was); then the
//     log is cut back to the valid prefix before the damage (later segments
//     removed, the damaged one truncated), and then to that prefix's commit
//     index: the prefix is the log as it was at an earlier moment, and an
//     entry after its commit index may have been overwritten since (the
//     leader's view of this node's log, formed from its old
//     acknowledgements, must never make it apply one). Term and vote are
//     what the prefix holds. The snapshots that verify are kept. If nothing usable is left, the log
//     and snapshots are moved to <dir>/damaged-<UTC time>/ (never deleted
//     automatically) and the store starts empty. Recovery reports what was
//     found and done. Data is never silently dropped: a repair is logged at
//     error level with file, offset and what it discards.
//   - What cannot be detected: after a crash (no clean stop), damage to the
//     final record that looks exactly like a torn write, or a suffix lost at
//     a record boundary, reads as a crash that lost only unacknowledged
//     writes. Ruling that out would take a second durable write per Save.
//   - Stats reports saves, fsyncs (their ratio is the group-commit factor),
//     bytes and fsync time; an fsync slower than one second is logged.
//   - A corrupt newest snapshot is skipped with a warning, renamed to
//     <name>.corrupt (so that the same snapshot received again is written
//     anew, not taken for the corrupt file) and the previous one used,
//     provided the log still reaches back to it (Compact makes sure it does
//     while that snapshot is retained).
//   - The directory holds a VERSION file (format, node id and the store's
//     incarnation, checked on open; written last when the directory is
//     created, so a VERSION file means a log existed) and a LOCK file held
//     with flock while open.
//
// # Incarnations
//
// Each data directory has an incarnation (Store.Incarnation, the node's
// raft.Config.Incarnation): a random non-zero number drawn from
// crypto/rand when the directory is created, and drawn anew whenever Open
// repairs damage, since the store may then have lost something it
// acknowledged. A store that lost nothing (a clean restart, a crash with
// at most a torn unacknowledged write, a corrupt newest snapshot replaced
// by the previous one) keeps its incarnation: otherwise a power failure of
// a majority would leave no voter the configuration counts. A directory
// written before incarnations (format 1) gets one at its first open.
//
// # Layout
//
//	<dir>/VERSION                       "capraft-storage", format, node id, incarnation
//	<dir>/LOCK                          flock(2) while a Store has it open
//	<dir>/wal/<seq>-<firstIndex>.wal    segments, hex, 64 MiB by default
//	<dir>/wal/clean-stop                where the log ended, while stopped cleanly
//	<dir>/damaged-<UTC time>/           damaged data moved aside by a repair
//	<dir>/snap/<index>-<term>.snap      snapshots, newest Options.KeepSnapshots kept
//
// Package wal documents the files under wal/, package snap those under
// snap/.
//
// # Source files
//
//	store.go     Options, the Store, Open and Close, the log path: Save,
//	             Compact, the raft.Storage reads, Stats
//	recovery.go  what Open does with the directory: recover the log and
//	             snapshots, report damage, repair it (new incarnation first),
//	             quarantine what is unusable; Recovery
//	version.go   the VERSION file and the store's incarnation
//	snapshot.go  creating (NewSnapshot, CreateSnapshot), reading
//	             (OpenSnapshot, LoadSnapshot) and receiving snapshots
//	wal/         the write-ahead log
//	snap/        the snapshot files
//	vfs/         the file-system surface everything durable goes through
//	crashfs/     a vfs that loses unsynced writes and tears the last one,
//	             for crash tests and simulations
//
// # Design decisions
//
// Hand-written log, not an embedded key-value store such as pebble. A Raft
// log is append-mostly with suffix truncation and prefix deletion, which
// maps directly onto segment files; the properties we must prove (one fsync
// per Ready, exactly-a-prefix after a crash, refusing to open on mid-log
// corruption) are simplest to show when we own the framing and the fsync
// calls. Pebble would add its own WAL plus memtable flushes and compactions
// (write amplification of the same bytes two or more times), background
// goroutines with their own I/O, and a recovery policy that is not ours to
// set (we must tell a torn tail from mid-log corruption and refuse the
// latter). We did not benchmark pebble: the hand-written log already sits
// at the disk's raw limit (below), which no layer on top of the same
// fsyncs can exceed, so the measurement that could justify a library is
// missing by construction. The benchmark in this package shows
// the hand-written log above the raw append+fdatasync loop of the same
// directory and within ~10 % of a raw overwrite of pre-zeroed space for
// Ready-sized batches; a general-purpose store cannot beat that raw limit.
// See docs/BENCHMARKS.md.
//
// Entry data is read back from the segment files rather than kept in
// memory, except for the newest few MiB. Memory holds 24 bytes per entry
// (term, segment, offset, size), so Term is a slice lookup and a 1 GiB log
// costs ~90 MiB of index for 256-byte entries instead of 1 GiB of data. The
// newest entries — the ones every node reads back to apply them and the
// leader reads to replicate — are kept, copied at Save, in a cache bounded
// by bytes (Options.EntryCacheBytes) that always ends at the last entry and
// is trimmed by overwrites, snapshot resets and compaction; Entries serves
// them without a read or a decode (~10x cheaper, BenchmarkEntriesRecent in
// package wal). Older entries are read with one pread per run of adjacent
// records, and their checksums verified again.
//
// Segments are preallocated by writing zeros, not with fallocate: measured
// on our VM, a 73 KB pwrite+fdatasync into already-written blocks takes
// ~120 µs against ~210 µs when it extends the file, and fallocate alone
// gave nothing on ext4. The next segment is filled in the background while
// the current one fills (wal.PreallocSync does it inline, deterministically,
// for simulations). Recovery reads zeros after the last record of the
// active segment as its normal end, and a partly written record followed
// only by zeros as a torn write.
//
// Appends are written with O_DIRECT|O_DSYNC where the file system accepts
// it (Options.NoDirectIO turns it off; non-Linux builds and file systems
// that refuse O_DIRECT fall back to pwrite+fdatasync, and the mode is
// logged at Open). The WAL keeps the active segment's partial last block
// in an aligned buffer and writes, per commit, from the start of that
// block through the new records, padded with zeros to a 4 KiB multiple:
// the write is durable when it returns, so no fdatasync (which would issue
// a second device flush) follows, and it costs about half the CPU of the
// buffered path (docs/BENCHMARKS.md). Rewriting the block's durable prefix
// with the same bytes is harmless if the write tears, and the zero padding
// reads as the clean end of the log, like preallocated space. Reads
// (Entries, recovery) use a second, buffered descriptor: direct writes
// invalidate the page cache over what they write, which is one more reason
// for the entry cache. The segment header, trims and truncations still go
// through the buffered descriptor and are fsynced before the first direct
// write, since an O_DSYNC write makes only its own range durable (crashfs
// refuses a direct write over unsynced buffered ones, to hold us to that).
//
// # Using it in a simulation
//
// crashfs.New() gives each simulated node its own file system; it and the
// other test-only settings are this module's internal knobs
// (Options.Knobs). Open the store with Options{SegmentSize: 64 << 10,
// Knobs: &storeknobs.Knobs{FS: fs, Prealloc: wal.PreallocSync}} (crashfs
// keeps every byte in memory, and each preallocated segment costs
// SegmentSize bytes at once, so keep them small). To crash a node, abandon its
// Store, call fs.Crash(rng) and Open again; fs.SetCrashAfter(n, rng) makes
// the crash land inside the n+1th file-system call. To damage a disk, stop
// the node (Close, or Crash), change what the disk holds with crashfs's
// FlipBits, TruncateFile and RemoveFile, and Open it with Repair.
package storage
