package router

import (
	"hash/maphash"
	"sync"
)

// maxCachedLen keeps very long statements (generated IN lists, bulk
// INSERTs) out of the cache: they rarely repeat and would make the memory
// bound CacheSize × length.
const maxCachedLen = 16 << 10

// stmtCache is a bounded map from statement text to its classification,
// split into shards so concurrent sessions rarely contend. Each shard evicts
// with the CLOCK algorithm: a hit sets a reference bit, and the hand clears
// bits until it finds an entry not used since its last pass.
type stmtCache struct {
	seed   maphash.Seed
	shards []cacheShard
	mask   uint64
}

type cacheShard struct {
	mu      sync.Mutex
	index   map[string]int32 // text → position in entries
	entries []cacheEntry
	hand    int
	limit   int
	_       [40]byte // keep neighbouring shards' locks off one cache line
}

type cacheEntry struct {
	sql  string
	stmt Statement
	ref  bool
}

// newStmtCache returns a cache holding about size entries, or nil for
// size <= 0 (no cache).
func newStmtCache(size int) *stmtCache {
	if size <= 0 {
		return nil
	}
	n := 16
	for n > 1 && size/n < 64 {
		n /= 2
	}
	c := &stmtCache{seed: maphash.MakeSeed(), shards: make([]cacheShard, n), mask: uint64(n - 1)}
	per := (size + n - 1) / n
	for i := range c.shards {
		c.shards[i].limit = per
		c.shards[i].index = make(map[string]int32)
	}
	return c
}

func (c *stmtCache) shard(sql string) *cacheShard {
	return &c.shards[maphash.String(c.seed, sql)&c.mask]
}

func (c *stmtCache) get(sql string) (Statement, bool) {
	if c == nil || len(sql) > maxCachedLen {
		return Statement{}, false
	}
	s := c.shard(sql)
	s.mu.Lock()
	i, ok := s.index[sql]
	return s.hit(i, ok)
}

// getBytes is get for a key in a byte slice (no string is made of it).
func (c *stmtCache) getBytes(key []byte) (Statement, bool) {
	if c == nil || len(key) > maxCachedLen {
		return Statement{}, false
	}
	s := &c.shards[maphash.Bytes(c.seed, key)&c.mask]
	s.mu.Lock()
	i, ok := s.index[string(key)]
	return s.hit(i, ok)
}

// hit ends a lookup under s.mu, which it unlocks: the entry at i if ok.
func (s *cacheShard) hit(i int32, ok bool) (Statement, bool) {
	if !ok {
		s.mu.Unlock()
		return Statement{}, false
	}
	e := &s.entries[i]
	e.ref = true
	st := e.stmt
	s.mu.Unlock()
	return st, true
}

func (c *stmtCache) put(sql string, st Statement) {
	if c == nil || len(sql) > maxCachedLen {
		return
	}
	s := c.shard(sql)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.index[sql]; ok {
		return // another session classified it meanwhile
	}
	// Own the key: the caller's string may pin a much larger buffer.
	e := cacheEntry{sql: string([]byte(sql)), stmt: st}
	if len(s.entries) < s.limit {
		s.index[e.sql] = int32(len(s.entries))
		s.entries = append(s.entries, e)
		return
	}
	for s.entries[s.hand].ref {
		s.entries[s.hand].ref = false
		s.hand = (s.hand + 1) % len(s.entries)
	}
	delete(s.index, s.entries[s.hand].sql)
	s.entries[s.hand] = e
	s.index[e.sql] = int32(s.hand)
	s.hand = (s.hand + 1) % len(s.entries)
}

// len returns the number of cached statements.
func (c *stmtCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		n += len(s.entries)
		s.mu.Unlock()
	}
	return n
}

func (c *stmtCache) reset() {
	if c == nil {
		return
	}
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		s.index = make(map[string]int32)
		s.entries = nil
		s.hand = 0
		s.mu.Unlock()
	}
}
