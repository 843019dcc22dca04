// Package wal is the segmented write-ahead log under raftnode/storage: Raft
// entries, hard state and snapshot references as checksummed records in
// numbered segment files, with an in-memory index (term and file position of
// every live entry) rebuilt at Open.
//
// Contract for callers (the storage.Store):
//
//   - Save(Batch) returns nil only after one durable write covers the whole
//     batch — a write and an fdatasync, or one O_DIRECT|O_DSYNC write of
//     whole blocks (direct mode, the default where the file system allows
//     it; Options.NoDirectIO turns it off); concurrent Saves share it
//     (group commit). Records of a batch land in the order snapshot reference,
//     entries, hard state, so a torn batch leaves a prefix of that order.
//   - An entry at an index already in the log truncates the log from there
//     (conflicting suffix); a snapshot reference whose entry the log does not
//     hold resets the log to start after it.
//   - Close records a clean stop: a marker file (clean-stop) naming the
//     segment, offset, last index and term where the log ends, written
//     once everything is durable. Open removes it, durably, before anything
//     new is written, so a later crash is treated as a crash again.
//   - Open verifies every record. After a crash (no marker) it repairs only
//     a torn final record of the last segment (warning, truncation): one
//     that runs past the end of the file, or shows the mark of unwritten
//     space (see looksTorn); that record was never acknowledged. After a
//     clean stop nothing can be torn, so damage to the final record is
//     corruption too, and a log that ends before the marker says (a lost
//     suffix, a missing newest segment) is damage. Any damage — a bad
//     checksum, a segment missing from the sequence or not continuing the
//     previous one, a lost suffix — is a *DamageError naming file and
//     offset.
//   - With Options.Repair, Open calls it with the damage before changing
//     anything, then cuts the log back to the valid prefix before the
//     damage (later segments removed newest first, the damaged segment
//     truncated) and opens it. That prefix is the log as it was at some
//     earlier moment: entries it holds beyond its hard state's commit index
//     may have been overwritten since, in what was lost, so a truncation
//     record (TypeTruncate) ends the log at the commit index. When nothing
//     before the damage is usable (the first segment's header), the error
//     is returned instead.
//   - What the log cannot tell: after a crash, a final record damaged so
//     that it looks torn, or a suffix lost at a record boundary, reads as
//     a crash that lost only unacknowledged writes. Telling those apart
//     would need a second durable write per Save (Protocol-Aware Recovery's
//     persist records); a clean stop is where the marker makes them
//     detectable at no cost to Save.
//   - Entries serves the newest entries (up to Options.EntryCacheBytes of
//     them, copied at Save) from memory and older ones from the segments;
//     the returned Data must not be modified.
//   - Compact(index, keepFrom) forgets entries up to index and deletes whole
//     segments that no replay needs any more, oldest first, each removal
//     made durable before the next.
//
// Each segment starts with a header record (sequence number, the index and
// term of the entry before it, the hard state), so any suffix of the
// segment sequence can be replayed on its own once older segments are
// deleted. A segment is new when the active one has reached SegmentSize
// bytes; it is created, its header fsynced, and the directory fsynced before
// anything in it is acknowledged.
//
// # Files on disk
//
//	<dir>/<seq>-<firstIndex>.wal  a segment: seq counts from 1, firstIndex is
//	                              LastIndex()+1 when it was created (16 hex
//	                              digits each, so names sort in log order)
//	<dir>/spare.wal.tmp           the next segment, zero-filled ahead of use;
//	                              renamed into place at the next rollover
//	<dir>/clean-stop              where the log ended (segment, offset, last
//	                              index and term, CRC), while stopped cleanly
//	<dir>/clean-stop.tmp          the marker while Close writes it
//
// A segment is a sequence of records (framing in record.go): a TypeSegment
// header, then entries, hard states, snapshot references and truncations,
// in the order they were saved. Every segment but the last ends exactly at
// its last record; the last one may continue with zeros (a preallocated
// segment, or a direct write's padding to a whole block), which recovery
// reads as the end of the log.
//
// # Source files
//
//	wal.go        Options, the WAL type and its locks, Open, Close, Abandon
//	files.go      the names of the files in a WAL directory; Empty
//	record.go     record framing: encoding, decoding, checksums
//	segment.go    segment files: rolling over to a new one, reopening one
//	              read-write
//	prealloc.go   zero-filled spare segments (PreallocMode)
//	commit.go     Save and the group-commit round: encode, write, publish
//	direct.go     O_DIRECT|O_DSYNC writes of whole blocks, the aligned buffer
//	index.go      the in-memory index of live entries (term, file position)
//	              and apply, shared by replay and commit
//	cache.go      the cache of the newest entries' data
//	read.go       HardState, Start, LastIndex, KeepBack, Term, Entries
//	compact.go    Compact: forgetting a prefix, deleting whole segments
//	stats.go      Stats
//	recover.go    Open's replay of the segments: torn tails, zero ends
//	cleanstop.go  the clean-stop marker
//	damage.go     DamageError, and repair: cutting the log back to its valid
//	              prefix
package wal
