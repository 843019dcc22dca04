package wal

import "github.com/capraft/capraft/raftnode/raft"

// DefaultEntryCacheBytes is the default bound of the entry cache: a few
// MiB covers the entries every node reads back to apply them (and a leader
// reads to replicate) shortly after they are written.
const DefaultEntryCacheBytes = 4 << 20

// cacheEntryOverhead is what one cached entry costs besides its data (the
// raft.Entry value in the slice), counted against the bound so a flood of
// empty entries is bounded too.
const cacheEntryOverhead = 48

// entryCache holds the newest entries of the log with their data, so that
// Entries for a recent range needs no read and no decode.
//
// Invariant (kept by the WAL under its mu): ents holds consecutive indexes
// and, when not empty, its last entry is the log's last entry, with the
// same term. Every change to the log's suffix (append, overwrite, snapshot
// reset, compaction) goes through the methods below.
//
// The Data slices are copies made at Save into a buffer owned by the cache
// and never written again, so callers of Entries may keep them (they must
// not modify them, as with raft.MemoryStorage).
type entryCache struct {
	max   int64 // <= 0: disabled
	bytes int64
	ents  []raft.Entry
}

func entryCost(e *raft.Entry) int64 { return int64(len(e.Data)) + cacheEntryOverhead }

// bounds returns the first and last cached index; ok is false if empty.
func (c *entryCache) bounds() (first, last uint64, ok bool) {
	if len(c.ents) == 0 {
		return 0, 0, false
	}
	return c.ents[0].Index, c.ents[len(c.ents)-1].Index, true
}

// add appends e, the new last entry of the log. An e that does not follow
// the cached entries (which the WAL never produces) empties the cache
// first, so the cache can never hold a gap.
func (c *entryCache) add(e raft.Entry) {
	if c.max <= 0 {
		return
	}
	if _, last, ok := c.bounds(); ok && e.Index != last+1 {
		c.reset()
	}
	cost := entryCost(&e)
	if cost > c.max {
		// Too big to cache; the cache must still end at the last entry.
		c.reset()
		return
	}
	c.ents = append(c.ents, e)
	c.bytes += cost
	k := 0
	for c.bytes > c.max {
		c.bytes -= entryCost(&c.ents[k])
		c.ents[k] = raft.Entry{} // release the data for the collector
		k++
	}
	c.ents = c.ents[k:]
}

// truncateFrom forgets the entries at index i and above (an overwrite).
func (c *entryCache) truncateFrom(i uint64) {
	first, _, ok := c.bounds()
	if !ok || i > c.ents[len(c.ents)-1].Index {
		return
	}
	if i <= first {
		c.reset()
		return
	}
	for k := i - first; k < uint64(len(c.ents)); k++ {
		c.bytes -= entryCost(&c.ents[k])
		c.ents[k] = raft.Entry{}
	}
	c.ents = c.ents[:i-first]
}

// dropTo forgets the entries at index i and below (a compaction).
func (c *entryCache) dropTo(i uint64) {
	first, last, ok := c.bounds()
	if !ok || i < first {
		return
	}
	if i >= last {
		c.reset()
		return
	}
	n := i - first + 1
	for k := uint64(0); k < n; k++ {
		c.bytes -= entryCost(&c.ents[k])
		c.ents[k] = raft.Entry{}
	}
	c.ents = c.ents[n:]
}

func (c *entryCache) reset() {
	clear(c.ents)
	c.ents = c.ents[:0]
	c.bytes = 0
}
