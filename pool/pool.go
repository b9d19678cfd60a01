// Package pool keeps authenticated upstream connections to one PostgreSQL
// server for one (database, user) pair, within the limits the team's guide
// uses: at most pool_size + max_overflow open, pool_size kept when idle
// (overflow connections are closed once they sat idle for IdleTimeout, as
// PgBouncer's server_idle_timeout; with 0 as soon as they come back, as
// SQLAlchemy's QueuePool does), pool_timeout to wait for one, pool_recycle
// to retire old ones, pool_pre_ping to check one that sat idle before
// handing it out.
//
// Ownership: Acquire hands a *Conn to the caller, who must give it back with
// exactly one of Release (clean and idle) or Discard (anything else).
package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/secret"
)

// PingAfter is how long a connection must sit idle before pool_pre_ping
// checks it: a connection used a moment ago is known to be alive.
const PingAfter = 2 * time.Second

// CheckAfter is how long a connection must have been idle before pool_pre_ping
// looks at its socket on checkout. Under load a connection comes back and
// goes out again within microseconds; a backend ended in that window is as
// likely as one ended just after the look.
const CheckAfter = time.Millisecond

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pool is closed")

// Options describes one pool. Zero durations mean: no recycle, no connect
// timeout.
type Options struct {
	Host string
	Port int
	User string
	// Password is the user's plain password, md5 hash or SCRAM verifier
	// (see SetLogin); Keys holds the ClientKeys a verifier logs in with.
	Password string
	Keys     *secret.KeyRing
	Database string
	Limits
	ConnectTimeout time.Duration
	TLS            TLS // server_tls
	Logger         *zap.Logger
}

// Name identifies the pool in errors and logs: user@database on host:port.
func (o *Options) Name() string {
	return fmt.Sprintf("%s@%s on %s", o.User, o.Database, o.Addr())
}

// Addr is the server's address for dialing: host:port, [host]:port for an
// IPv6 address (cancel requests are dialed with it).
func (o *Options) Addr() string { return net.JoinHostPort(o.Host, strconv.Itoa(o.Port)) }

// TimeoutError is returned when no connection became free within pool_timeout.
type TimeoutError struct {
	Pool   string
	Size   int
	Max    int
	Waited time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("pool %s exhausted: all %d connections in use (pool_size %d + max_overflow %d), waited %s (pool_timeout)",
		e.Pool, e.Max, e.Size, e.Max-e.Size, e.Waited.Round(time.Millisecond))
}

// Pool is safe for concurrent use.
type Pool struct {
	log *zap.Logger

	mu      sync.Mutex
	opts    Options
	idle    []*Conn // most recently used last
	open    int     // idle + handed out + being dialled
	waiters []waiter
	conns   map[*Conn]struct{}
	closed  bool
	// reaper, while armed, closes overflow connections idle past
	// IdleTimeout; it runs on its own goroutine and takes mu.
	reaper *time.Timer
}

// waiter is a client waiting in Acquire: woken through ch; waiting since at.
type waiter struct {
	ch chan struct{}
	at time.Time
}

// New returns an empty pool; connections are opened on demand.
func New(opts Options) *Pool {
	l := opts.Logger
	if l == nil {
		l = zap.NewNop()
	}
	return &Pool{opts: opts, log: l.With(zap.String("pool", opts.Name())), conns: map[*Conn]struct{}{}}
}

// Stats is a snapshot of a pool.
type Stats struct {
	Open, Idle, Waiting, Max int
	// Size and MaxOverflow are the pool's current knobs.
	Size, MaxOverflow int
	// MaxWait is how long the oldest waiting client has waited (0: none).
	MaxWait time.Duration
	// Dialing counts the connections being opened (included in Open).
	Dialing int
}

// Stats returns the current counts.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := Stats{Open: p.open, Idle: len(p.idle), Waiting: len(p.waiters), Max: p.opts.Size + p.opts.MaxOverflow,
		Size: p.opts.Size, MaxOverflow: p.opts.MaxOverflow, Dialing: p.open - len(p.conns)}
	// Not in order: a woken waiter that lost the connection queues again
	// with its first start.
	now := time.Now()
	for _, w := range p.waiters {
		st.MaxWait = max(st.MaxWait, now.Sub(w.at))
	}
	return st
}

// Open is the number of connections open or being opened (the load
// balancer's figure: cheaper than Stats).
func (p *Pool) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// ConnInfo describes one open server connection of a pool.
type ConnInfo struct {
	Conn      *Conn
	PID       uint32
	Addr      string // the server, host:port
	LocalAddr string // pgsplit's end
	Created   time.Time
	LastUsed  time.Time // last returned to the pool (Created if never)
	HandedOut time.Time // last taken from the pool
	Idle      bool
	Prepared  int // pgsplit statements prepared on it, as of its last return
}

// Conns lists the pool's open connections (idle and handed out; not those
// being dialled).
func (p *Pool) Conns() []ConnInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := make(map[*Conn]bool, len(p.idle))
	for _, c := range p.idle {
		idle[c] = true
	}
	out := make([]ConnInfo, 0, len(p.conns))
	for c := range p.conns {
		out = append(out, ConnInfo{Conn: c, PID: c.PID, Addr: c.Addr, LocalAddr: c.raw.LocalAddr().String(), Created: c.created,
			LastUsed: c.lastUsed, HandedOut: c.handedOut, Idle: idle[c], Prepared: c.prepared})
	}
	return out
}

// SetPassword changes the secret new connections of the pool log in with
// (a password, an md5 hash or a SCRAM verifier): after a RELOAD, or a
// lookup that found a rotated verifier. Open connections stay.
func (p *Pool) SetPassword(pw string) {
	p.mu.Lock()
	p.opts.Password = pw
	p.mu.Unlock()
}

// Limits are the pool knobs a reload may change.
type Limits struct {
	Size, MaxOverflow             int
	Timeout, Recycle, IdleTimeout time.Duration
	PrePing                       bool
}

// SetLimits applies new pool knobs (on reload). Connections above the new
// limits close as they come back, or when idle past the new IdleTimeout.
func (p *Pool) SetLimits(l Limits) {
	p.mu.Lock()
	p.opts.Limits = l
	closing := p.reapLocked(time.Now())
	p.wakeLocked()
	p.mu.Unlock()
	closeAll(closing)
}

// TryAcquire returns an idle connection that passes the checks Acquire makes,
// or nil without waiting or dialling (then call Acquire). The caller owns
// the result.
func (p *Pool) TryAcquire() *Conn {
	for {
		p.mu.Lock()
		n := len(p.idle)
		if n == 0 || p.closed {
			p.mu.Unlock()
			return nil
		}
		now, opts := time.Now(), p.opts
		if opts.PrePing && now.Sub(p.idle[n-1].lastUsed) > PingAfter {
			p.mu.Unlock()
			return nil // a ping round trip: Acquire's path does it
		}
		c := p.popIdleLocked(now)
		p.mu.Unlock()
		if p.checkout(context.Background(), c, opts, now) {
			return c
		}
	}
}

// checkout vets an idle connection just taken from the pool, and closes it
// (returning false) when it is past pool_recycle or, with pool_pre_ping,
// when the server ended it: a look at its socket (no round trip) if it sat
// idle over CheckAfter, an empty query if over PingAfter. A connection the
// server ended while it sat idle must not reach a client, whose first
// statement would fail with the server's FATAL.
func (p *Pool) checkout(ctx context.Context, c *Conn, opts Options, now time.Time) bool {
	if age := now.Sub(c.created); opts.Recycle > 0 && age > opts.Recycle {
		p.log.Debug("recycling old connection", zap.Duration("age", age))
		p.Discard(c)
		return false
	}
	if !opts.PrePing {
		return true
	}
	idle := now.Sub(c.lastUsed)
	if idle > CheckAfter {
		if err := c.checkIdle(); err != nil {
			p.log.Info("idle connection was ended by the server, replacing it", zap.Error(err))
			p.Discard(c)
			return false
		}
	}
	if idle > PingAfter {
		pctx, cancel := context.WithTimeout(ctx, pingTimeout(opts))
		err := c.Ping(pctx)
		cancel()
		if err != nil {
			p.log.Info("pre-ping failed, replacing connection", zap.Error(err))
			p.Discard(c)
			return false
		}
	}
	return true
}

// Acquire returns a connection, opening one if the pool may, or waits up to
// pool_timeout for one to come back. The caller owns the result.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	start := time.Now()
	p.mu.Lock()
	deadline := start.Add(p.opts.Timeout)
	for {
		if p.closed {
			p.mu.Unlock()
			return nil, ErrClosed
		}
		if len(p.idle) > 0 {
			now := time.Now()
			c, opts := p.popIdleLocked(now), p.opts
			p.mu.Unlock()
			if !p.checkout(ctx, c, opts, now) {
				p.mu.Lock()
				continue
			}
			return c, nil
		}
		if p.open < p.opts.Size+p.opts.MaxOverflow {
			p.open++
			opts := p.opts
			p.mu.Unlock()
			c, err := dial(ctx, &opts)
			if err != nil {
				p.mu.Lock()
				p.open--
				p.wakeLocked()
				p.mu.Unlock()
				return nil, err
			}
			p.mu.Lock()
			c.handedOut = time.Now()
			p.conns[c] = struct{}{}
			p.mu.Unlock()
			p.log.Debug("opened connection", zap.Uint32("backend_pid", c.PID))
			return c, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			e := &TimeoutError{Pool: p.opts.Name(), Size: p.opts.Size, Max: p.opts.Size + p.opts.MaxOverflow, Waited: time.Since(start)}
			p.mu.Unlock()
			return nil, e
		}
		w := make(chan struct{}, 1)
		p.waiters = append(p.waiters, waiter{w, start})
		p.mu.Unlock()
		t := time.NewTimer(wait)
		var ctxErr error
		select {
		case <-w:
		case <-t.C:
		case <-ctx.Done():
			ctxErr = ctx.Err()
		}
		t.Stop()
		p.mu.Lock()
		p.removeWaiterLocked(w)
		if ctxErr != nil {
			p.mu.Unlock()
			return nil, ctxErr
		}
	}
}

func pingTimeout(o Options) time.Duration {
	if o.ConnectTimeout > 0 {
		return o.ConnectTimeout
	}
	return 5 * time.Second
}

// removeWaiterLocked drops w from the queue. If w was woken but its owner
// gives up, the wake-up passes to the next waiter so none is lost.
func (p *Pool) removeWaiterLocked(w chan struct{}) {
	for i, x := range p.waiters {
		if x.ch == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			break
		}
	}
	select {
	case <-w:
		p.wakeLocked()
	default:
	}
}

func (p *Pool) wakeLocked() {
	for _, w := range p.waiters {
		select {
		case w.ch <- struct{}{}:
			return
		default: // already woken, try the next
		}
	}
}

// popIdleLocked takes the most recently used idle connection (there is
// one) and stamps it handed out at now.
func (p *Pool) popIdleLocked(now time.Time) *Conn {
	c := p.idle[len(p.idle)-1]
	p.idle = p.idle[:len(p.idle)-1]
	c.handedOut = now
	return c
}

// Release gives back a clean, idle connection (transaction status I, session
// state reset). Connections past pool_recycle, and overflow connections when
// IdleTimeout is 0, are closed instead of kept; other overflow connections
// are closed once idle for IdleTimeout.
func (p *Pool) Release(c *Conn) {
	prepared, now := c.State.Prepared.Len(), time.Now()
	p.mu.Lock()
	c.lastUsed, c.prepared = now, prepared
	overflow := len(p.idle) >= p.opts.Size
	if p.closed || (overflow && p.opts.IdleTimeout <= 0) || (p.opts.Recycle > 0 && now.Sub(c.created) > p.opts.Recycle) {
		delete(p.conns, c)
		p.open--
		p.wakeLocked()
		p.mu.Unlock()
		_ = c.raw.Close()
		return
	}
	p.idle = append(p.idle, c)
	if overflow && p.reaper == nil {
		p.reaper = time.AfterFunc(p.opts.IdleTimeout, p.reap)
	}
	p.wakeLocked()
	p.mu.Unlock()
}

// reap is the reaper's tick: it closes the overflow connections idle past
// IdleTimeout and arms itself again while overflow connections sit idle.
func (p *Pool) reap() {
	p.mu.Lock()
	p.reaper = nil
	closing := p.reapLocked(time.Now())
	if !p.closed && len(p.idle) > p.opts.Size && p.opts.IdleTimeout > 0 {
		// The least recently used idle connection is idle[0]: the next
		// tick is due when it has sat idle for IdleTimeout.
		wait := p.opts.IdleTimeout - time.Since(p.idle[0].lastUsed)
		p.reaper = time.AfterFunc(max(wait, time.Millisecond), p.reap)
	}
	p.mu.Unlock()
	closeAll(closing)
}

// reapLocked takes out of the pool the idle connections over Size that sat
// idle past IdleTimeout (all of them over Size when it is 0), least recently
// used first; the caller closes them after unlocking.
func (p *Pool) reapLocked(now time.Time) []*Conn {
	var closing []*Conn
	for len(p.idle) > p.opts.Size {
		c := p.idle[0]
		if p.opts.IdleTimeout > 0 && now.Sub(c.lastUsed) < p.opts.IdleTimeout {
			break
		}
		p.idle = p.idle[1:]
		delete(p.conns, c)
		p.open--
		closing = append(closing, c)
	}
	if len(closing) > 0 {
		p.wakeLocked()
	}
	return closing
}

// closeAll closes connections already taken out of the pool.
func closeAll(cs []*Conn) {
	for _, c := range cs {
		_ = c.raw.Close()
	}
}

// Discard closes a connection that cannot be reused and frees its place.
func (p *Pool) Discard(c *Conn) {
	_ = c.raw.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.open--
	p.wakeLocked()
	p.mu.Unlock()
}

// CloseIdle closes the idle connections (their server went away or
// changed role); the pool stays usable and opens new ones on demand.
func (p *Pool) CloseIdle() int {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	for _, c := range idle {
		delete(p.conns, c)
	}
	p.wakeLocked()
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.raw.Close()
	}
	return len(idle)
}

// Close closes idle connections and makes Acquire fail; connections handed
// out are closed when they come back.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaper = nil
	}
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	for _, c := range idle {
		delete(p.conns, c)
	}
	for _, w := range p.waiters {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
	p.mu.Unlock()
	for _, c := range idle {
		_ = c.raw.Close()
	}
}
