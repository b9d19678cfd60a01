package router

import (
	"strings"
	"sync"
	"sync/atomic"
)

// DefaultCacheSize is the number of classifications kept when
// Options.CacheSize is 0.
const DefaultCacheSize = 10000

// Options configure a Classifier. The zero value is usable: built-in
// function lists only, a cache of DefaultCacheSize entries.
type Options struct {
	// WriteFunctions (routing.write_functions) are function names that force
	// the primary, matched case-insensitively either as written
	// ("app.touch") or by their last part when the entry is unqualified
	// ("touch" matches app.touch too).
	WriteFunctions []string
	// ReadFunctions (routing.read_functions) are user functions marked safe
	// for replicas, matched case-insensitively against the name as written
	// in the query ("app.lookup" matches only app.lookup(…)). They never
	// excuse a name on the built-in or configured write lists.
	ReadFunctions []string
	// Volatile looks a function up in the catalog (pg_proc.provolatile =
	// 'v'), by the name as written in the query. known is false when the
	// catalog has no such function. nil means no catalog: functions outside
	// the built-in safe list and ReadFunctions then go to the primary. It is
	// called from many sessions at once and must not block: the proxy loads
	// the catalog ahead of time and calls Reset when it reloads it.
	Volatile func(name string) (volatile bool, known bool)
	// CacheSize is the number of classified statements kept (about; the
	// cache is sharded): 0 means DefaultCacheSize, negative means no cache.
	CacheSize int
	// MaxParseDepth and MaxParseBytes (limits.max_parse_depth,
	// limits.max_parse_bytes; 0: DefaultMaxParseDepth,
	// DefaultMaxParseBytes) keep statements from the parser that could
	// crash it: see Parsable. Such a statement goes to the primary.
	MaxParseDepth int
	MaxParseBytes int
}

// A Classifier classifies SQL strings. It is safe for concurrent use; its
// only mutable state is the statement cache (and a memo of parse-tree
// layouts, which only grows to the number of node types).
type Classifier struct {
	safeFuncs  map[string]struct{}
	readFuncs  map[string]struct{}
	writeFuncs map[string]struct{}
	volatile   func(string) (bool, bool)
	maxDepth   int
	maxBytes   int
	cache      *stmtCache
	shapes     *stmtCache    // by shapeKey: plain INSERT/UPDATE/DELETE whatever their values (see shapeCacheable)
	plans      sync.Map      // reflect.Type → walkPlan, see walk.go
	gen        atomic.Uint64 // bumped by Reset: earlier answers may be stale
}

// NewClassifier returns a Classifier for opts. It copies what it needs, so
// opts may be changed afterwards.
func NewClassifier(opts Options) *Classifier {
	size := opts.CacheSize
	if size == 0 {
		size = DefaultCacheSize
	}
	return &Classifier{
		safeFuncs:  nameSet(builtinSafeFuncs()),
		readFuncs:  nameSet(opts.ReadFunctions),
		writeFuncs: nameSet(opts.WriteFunctions),
		volatile:   opts.Volatile,
		maxDepth:   opts.MaxParseDepth,
		maxBytes:   opts.MaxParseBytes,
		cache:      newStmtCache(size),
		shapes:     newStmtCache(size),
	}
}

func nameSet(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			m[n] = struct{}{}
		}
	}
	return m
}

// Classify says what sql is and where it may run. It tries the fast path,
// then the cache, then the full parse (whose result it caches).
func (c *Classifier) Classify(sql string) Statement {
	hint, start := leadingHint(sql)
	if len(sql) > 2*c.depthLimit() {
		// Only a statement this long can nest past the limit (each level
		// takes two bytes at least); even the fast path leaves it alone.
		if ok, why := Parsable(sql, c.maxDepth, c.maxBytes); !ok {
			return Statement{Kind: KindOther, Target: Primary, Reason: why, Hint: hint, Unparsed: true}
		}
	}
	if st, ok := c.fastPath(sql, start, hint); ok {
		return st
	}
	if st, ok := c.cache.get(sql); ok {
		return st
	}
	// Statements the application writes with their values in the text
	// (the simple protocol: psycopg2, PHP, pgbench -M simple) never
	// repeat as text, but their shape does.
	var key []byte
	if c.shapes != nil {
		var keyBuf [256]byte
		key = shapeKey(sql, start, keyBuf[:0])
		if st, ok := c.shapes.getBytes(key); ok {
			st.Hint = hint
			return st
		}
	}
	st := c.parse(sql, hint)
	if key != nil && shapeCacheable(st) {
		c.shapes.put(string(key), st)
	} else {
		c.cache.put(sql, st)
	}
	return st
}

// shapeCacheable reports whether every statement of st's shape (the same
// tokens, other values) has st's classification: one INSERT, UPDATE or
// DELETE for the primary that calls no function and pins or releases
// nothing. Its values then decide nothing: a function (set_config,
// pg_advisory_lock, nextval) or a SET could make them matter.
func shapeCacheable(st Statement) bool {
	switch st.Kind {
	case KindInsert, KindUpdate, KindDelete:
	default:
		return false
	}
	return st.Statements == 1 && st.Target == Primary && !st.Unparsed && !st.BySession && st.Tx == nil &&
		len(st.Funcs) == 0 && len(st.Pins) == 0 && len(st.Unpins) == 0 && len(st.Kinds) == 0 && st.SetName == ""
}

// depthLimit is MaxParseDepth with the default filled in.
func (c *Classifier) depthLimit() int {
	if c.maxDepth > 0 {
		return c.maxDepth
	}
	return DefaultMaxParseDepth
}

// Reset drops every cached classification. Call it when the catalog behind
// Options.Volatile is reloaded. (Options themselves are fixed: a new
// configuration needs a new Classifier.)
func (c *Classifier) Reset() {
	c.gen.Add(1)
	c.cache.reset()
	c.shapes.reset()
}

// Generation changes at every Reset, so a caller that keeps a Statement
// (a prepared statement's class) knows when to classify again.
func (c *Classifier) Generation() uint64 { return c.gen.Load() }

// CacheLen returns the number of statements in the cache.
func (c *Classifier) CacheLen() int { return c.cache.len() }
