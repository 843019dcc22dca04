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
//   - Open verifies every record. It repairs only a torn final record of the
//     last segment (warning, truncation); any other damage — a bad checksum
//     elsewhere, a segment missing from the sequence, a segment that does
//     not continue the previous one — is an error naming file and offset.
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
package wal
