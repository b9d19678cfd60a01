package admin

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// fakeSource is a Source of fixed listings that records what was run.
type fakeSource struct {
	cfg       *config.Config
	clients   []ClientInfo
	pools     []PoolInfo
	conns     []ServerConnInfo
	dbs       []DatabaseInfo
	nodes     []NodeInfo
	stats     Stats
	queries   []QueryInfo
	paused    bool
	pause     func(abandon func() bool) error // nil: pause at once
	reloadErr error
	ran       []string // RELOAD, PAUSE, RESUME, SHUTDOWN, RESET in order
}

func newFakeSource() *fakeSource {
	at := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	return &fakeSource{
		cfg: &config.Config{Servers: []config.Server{{Host: "127.0.0.1", Port: 5432, Role: config.RolePrimary}},
			Auth: config.Auth{Method: config.AuthTrust, Users: []config.User{{Name: "app"}}},
			Pool: config.Pool{Mode: config.ModeTransaction, PoolSize: 10, MaxOverflow: 5, PoolTimeout: 30 * time.Second}, Routing: config.DefaultRouting()},
		clients: []ClientInfo{{User: "app", Database: "db", PID: 7, RemoteAddr: "127.0.0.1:40000", LocalAddr: "127.0.0.1:6432",
			ConnectedAt: at, Busy: true, Links: []ServerLink{{"primary", 100}, {"replica", 200}}, TxStatus: pgmsg.TxActive}},
		pools: []PoolInfo{{Database: "db", User: "app", Server: "127.0.0.1:5432", Role: "primary", Clients: 1,
			Open: 4, Idle: 1, Dialing: 1, Waiting: 2, MaxWait: 1500 * time.Millisecond, Size: 10, MaxOverflow: 5}},
		conns: []ServerConnInfo{{User: "app", Database: "db", Role: "primary", Addr: "127.0.0.1:5432", LocalAddr: "127.0.0.1:50000",
			PID: 100, Created: at, HandedOut: at.Add(time.Second), ClientPID: 7, ClientApp: "psql"}},
		dbs:     []DatabaseInfo{{Name: "db", Host: "127.0.0.1", Port: 5432, Role: "primary", Open: 4}},
		nodes:   []NodeInfo{{Host: "127.0.0.1", Port: 5432, Role: "primary", LagBytes: -1, LagSeconds: -1}},
		stats:   Stats{Since: time.Now(), Databases: []DatabaseStats{{Name: "db", Xacts: 2, Queries: 4, QueryTime: 40}}},
		queries: []QueryInfo{{Fingerprint: "f1", Query: "SELECT $1", Calls: 4, Replica: 1, Total: 8 * time.Millisecond}},
	}
}

func (f *fakeSource) Config() *config.Config        { return f.cfg }
func (f *fakeSource) Clients() []ClientInfo         { return f.clients }
func (f *fakeSource) Pools() []PoolInfo             { return f.pools }
func (f *fakeSource) ServerConns() []ServerConnInfo { return f.conns }
func (f *fakeSource) Databases() []DatabaseInfo     { return f.dbs }
func (f *fakeSource) NodeHealth() []NodeInfo        { return f.nodes }
func (f *fakeSource) Stats() Stats                  { return f.stats }
func (f *fakeSource) TopQueries(n int) []QueryInfo  { return f.queries[:min(n, len(f.queries))] }
func (f *fakeSource) Paused() bool                  { return f.paused }
func (f *fakeSource) RequestShutdown()              { f.ran = append(f.ran, "SHUTDOWN") }
func (f *fakeSource) ResetStats()                   { f.ran = append(f.ran, "RESET") }
func (f *fakeSource) ReloadFile() error             { f.ran = append(f.ran, "RELOAD"); return f.reloadErr }

func (f *fakeSource) Pause(abandon func() bool) error {
	f.ran = append(f.ran, "PAUSE")
	if f.paused {
		return ErrAlreadyPaused
	}
	if f.pause != nil {
		return f.pause(abandon)
	}
	f.paused = true
	return nil
}

func (f *fakeSource) Resume() error {
	f.ran = append(f.ran, "RESUME")
	if !f.paused {
		return ErrNotPaused
	}
	f.paused = false
	return nil
}

// fakeClient hands the session the messages it was given, then "left",
// and keeps what the session sent.
type fakeClient struct {
	in    [][]byte // whole frontend messages
	sent  []byte
	sends int
	fatal *pgmsg.Error
	gone  bool
	looks int // calls of Gone
	// onSend runs after each Send (a test's look at the order of things).
	onSend func()
}

func (c *fakeClient) Next() (byte, []byte, error) {
	if len(c.in) == 0 {
		return 0, nil, errors.New("client connection closed")
	}
	m := c.in[0]
	c.in = c.in[1:]
	return m[0], m[5:], nil
}

func (c *fakeClient) Send(out []byte) error {
	c.sent = append(c.sent, out...)
	c.sends++
	if c.onSend != nil {
		c.onSend()
	}
	return nil
}

func (c *fakeClient) Fatal(e *pgmsg.Error) { c.fatal = e }

func (c *fakeClient) Gone() bool {
	c.looks++
	return c.gone
}

// msgs encodes frontend messages for a fakeClient.
func msgs(t testing.TB, ms ...pgproto3.FrontendMessage) [][]byte {
	t.Helper()
	var out [][]byte
	for _, m := range ms {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// serve runs a session of src over the messages ms and returns what it
// sent, read back as a driver reads it (see trace), and why it ended.
func serve(t *testing.T, src Source, ms ...pgproto3.FrontendMessage) ([]string, string, *fakeClient) {
	t.Helper()
	c := &fakeClient{in: msgs(t, ms...)}
	reason := NewSession(src, c, nil).Serve()
	return trace(t, c.sent), reason, c
}

// trace reads buf as a client would and names each message: "T a,b" for
// a RowDescription, "D x|NULL" for a DataRow (binary values in hex), "C
// tag", "E sqlstate", "Z", and the type byte of any other.
func trace(t *testing.T, buf []byte) []string {
	t.Helper()
	var out []string
	var formats []int16
	f := pgproto3.NewFrontend(strings.NewReader(string(buf)), nil)
	for typ := range pgmsg.Frames(buf) {
		m, err := f.Receive()
		if err != nil {
			t.Fatalf("a driver cannot read what the console sent: %v", err)
		}
		switch x := m.(type) {
		case *pgproto3.RowDescription:
			var names []string
			formats = formats[:0]
			for _, fd := range x.Fields {
				names = append(names, string(fd.Name))
				formats = append(formats, fd.Format)
			}
			out = append(out, "T "+strings.Join(names, ","))
		case *pgproto3.DataRow:
			var vals []string
			for i, v := range x.Values {
				switch {
				case v == nil:
					vals = append(vals, "NULL")
				case i < len(formats) && formats[i] == formatBinary:
					vals = append(vals, fmt.Sprintf("%x", v))
				default:
					vals = append(vals, string(v))
				}
			}
			out = append(out, "D "+strings.Join(vals, "|"))
		case *pgproto3.CommandComplete:
			out = append(out, "C "+string(x.CommandTag))
		case *pgproto3.ErrorResponse:
			out = append(out, "E "+x.Code)
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z")
		default:
			out = append(out, string(rune(typ)))
		}
	}
	return out
}
