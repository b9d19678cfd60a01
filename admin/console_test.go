package admin

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

func wantTrace(t *testing.T, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("sent\n  %q\nwant\n  %q", got, want)
	}
}

// A simple Query runs each command in turn (rows, then the tag) and ends
// with ReadyForQuery; the session ends when the client goes.
func TestSimpleQueryAnswersEachCommandThenReady(t *testing.T) {
	src := newFakeSource()
	got, reason, _ := serve(t, src, &pgproto3.Query{String: "show stats; ;reset   stats"})
	wantTrace(t, got,
		"T database,total_xact_count,total_query_count,total_received,total_sent,total_xact_time,total_query_time,total_wait_time,"+
			"avg_xact_count,avg_query_count,avg_recv,avg_sent,avg_xact_time,avg_query_time,avg_wait_time",
		"D db|2|4|0|0|0|40|0|2|4|0|0|0|10|0", "C SHOW", "C RESET", "Z")
	if !slices.Equal(src.ran, []string{"RESET"}) {
		t.Errorf("ran %q, want RESET", src.ran)
	}
	if reason != "client connection closed" {
		t.Errorf("reason %q", reason)
	}
}

// The first failing command ends the Query: the ones after it do not run.
func TestSimpleQueryStopsAtTheFirstError(t *testing.T) {
	src := newFakeSource()
	got, _, _ := serve(t, src, &pgproto3.Query{String: "RESUME; RESET STATS"}, &pgproto3.Query{String: "SHOW NOTHING"}, &pgproto3.Query{String: " ; "})
	wantTrace(t, got, "E 55000", "Z", "E 42601", "Z", "I", "Z")
	if !slices.Equal(src.ran, []string{"RESUME"}) {
		t.Errorf("ran %q, want only RESUME", src.ran)
	}
}

// After an extended-protocol error every message up to Sync is ignored,
// a Query too; Sync answers ReadyForQuery and the session goes on.
func TestExtendedErrorSkipsUntilSync(t *testing.T) {
	got, _, _ := serve(t, newFakeSource(),
		&pgproto3.Parse{Query: "SHOW NOTHING"},
		&pgproto3.Bind{},
		&pgproto3.Execute{},
		&pgproto3.Query{String: "SHOW VERSION"},
		&pgproto3.Sync{},
		&pgproto3.Parse{Name: "v", Query: "SHOW VERSION"},
		&pgproto3.Bind{PreparedStatement: "v"},
		&pgproto3.Describe{ObjectType: pgmsg.TargetPortal},
		&pgproto3.Execute{},
		&pgproto3.Close{ObjectType: pgmsg.TargetStatement, Name: "v"},
		&pgproto3.Sync{},
	)
	if len(got) != 9 || got[6] != "C SHOW" || !strings.HasPrefix(got[5], "D pgsplit ") {
		t.Fatalf("sent %q", got)
	}
	wantTrace(t, slices.Delete(got, 5, 6), "E 42601", "Z", "1", "2", "T version", "C SHOW", "3", "Z")
}

// The extended protocol's own refusals: a second statement of one name,
// parameters, format codes other than text and binary, unknown names, more
// result formats than columns, two commands in one Parse.
func TestExtendedRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []pgproto3.FrontendMessage
		want string
	}{
		{"duplicate statement", []pgproto3.FrontendMessage{&pgproto3.Parse{Name: "s", Query: "SHOW HELP"}, &pgproto3.Parse{Name: "s", Query: "SHOW HELP"}}, "E 42P05"},
		{"parameters", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SHOW HELP"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("1")}}}, "E 08P01"},
		{"format code 2", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SHOW HELP"}, &pgproto3.Bind{ResultFormatCodes: []int16{2}}}, "E 08P01"},
		{"no such statement", []pgproto3.FrontendMessage{&pgproto3.Bind{PreparedStatement: "x"}}, "E 26000"},
		{"describe no such statement", []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: pgmsg.TargetStatement, Name: "x"}}, "E 26000"},
		{"no such portal", []pgproto3.FrontendMessage{&pgproto3.Execute{Portal: "x"}}, "E 34000"},
		{"describe no such portal", []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: pgmsg.TargetPortal, Name: "x"}}, "E 34000"},
		{"formats for 3 of 2 columns", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SHOW HELP"}, &pgproto3.Bind{ResultFormatCodes: []int16{0, 1, 0}}, &pgproto3.Execute{}}, "E 08P01"},
		{"two commands", []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "SHOW HELP; SHOW POOLS"}}, "E 42601"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, _, _ := serve(t, newFakeSource(), append(tc.ms, &pgproto3.Sync{})...)
			if len(got) < 2 || got[len(got)-2] != tc.want || got[len(got)-1] != "Z" {
				t.Errorf("sent %q, want it to end in %s, Z", got, tc.want)
			}
		})
	}
}

// Execute with a row limit sends that many rows and PortalSuspended; the
// next Execute of the portal goes on from there without running the
// command again.
func TestExecuteWithMaxRowsSuspendsThePortal(t *testing.T) {
	src := newFakeSource()
	src.queries = []QueryInfo{{Fingerprint: "a", Calls: 1}, {Fingerprint: "b", Calls: 1}, {Fingerprint: "c", Calls: 1}}
	got, _, _ := serve(t, src,
		&pgproto3.Parse{Query: "SHOW QUERIES"}, &pgproto3.Bind{},
		&pgproto3.Execute{MaxRows: 2}, &pgproto3.Execute{MaxRows: 2}, &pgproto3.Sync{})
	var kinds []string
	for _, m := range got {
		kinds = append(kinds, m[:1])
	}
	wantTrace(t, kinds, "1", "2", "D", "D", "s", "D", "C", "Z")
}

// Binary results, asked for by Bind, arrive in binary as Describe says;
// an empty statement executes as EmptyQueryResponse.
func TestBindFormatsReachTheRows(t *testing.T) {
	got, _, _ := serve(t, newFakeSource(),
		&pgproto3.Parse{Query: "SHOW DATABASES"}, &pgproto3.Bind{ResultFormatCodes: []int16{1}},
		&pgproto3.Describe{ObjectType: pgmsg.TargetPortal}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "e", Query: ""}, &pgproto3.Bind{PreparedStatement: "e"},
		&pgproto3.Describe{ObjectType: pgmsg.TargetStatement, Name: "e"}, &pgproto3.Execute{}, &pgproto3.Sync{})
	if len(got) != 11 {
		t.Fatalf("sent %q", got)
	}
	// port 5432, pool_size 10 as int8; host as binary text.
	if !strings.HasPrefix(got[3], "D 6462|3132372e302e302e31|0000000000001538|6462||000000000000000a|") {
		t.Errorf("binary row %q", got[3])
	}
	wantTrace(t, slices.Delete(got, 2, 4), "1", "2", "C SHOW", "1", "2", "t", "n", "I", "Z")
}

// A message that has no place on the console ends the session with 08P01.
func TestUnexpectedMessageIsFatal(t *testing.T) {
	_, reason, c := serve(t, newFakeSource(), &pgproto3.CopyData{Data: []byte("x")})
	if reason != "protocol violation" || c.fatal == nil || c.fatal.Code != pgmsg.CodeProtocolViolation || !c.fatal.IsFatal() {
		t.Errorf("reason %q, fatal %+v", reason, c.fatal)
	}
}

// Terminate ends the session quietly.
func TestTerminateEndsTheSession(t *testing.T) {
	got, reason, _ := serve(t, newFakeSource(), &pgproto3.Terminate{}, &pgproto3.Query{String: "SHUTDOWN"})
	if reason != "client terminated" || len(got) != 0 {
		t.Errorf("reason %q, sent %q", reason, got)
	}
}

// SHUTDOWN is requested only once its answer is out: the drain that
// follows would close the console first otherwise.
func TestShutdownIsRequestedAfterTheAnswerIsSent(t *testing.T) {
	src := newFakeSource()
	c := &fakeClient{in: msgs(t, &pgproto3.Query{String: "SHUTDOWN"}, &pgproto3.Query{String: "SHOW VERSION"})}
	var atSend []int
	c.onSend = func() { atSend = append(atSend, len(src.ran)) }
	NewSession(src, c, nil).Serve()
	if !slices.Equal(src.ran, []string{"SHUTDOWN"}) || !slices.Equal(atSend, []int{0, 1}) {
		t.Errorf("ran %q; shutdowns requested at each send %v, want [0 1]", src.ran, atSend)
	}
	if got := trace(t, c.sent); got[0] != "C SHUTDOWN" || got[1] != "Z" {
		t.Errorf("sent %q", got)
	}
}

// PAUSE waits in the Source; a cancel request abandons it at the next look,
// and the admin's socket is looked at every goneCheckEvery looks only.
func TestPauseIsAbandonedByCancelOrAGoneClient(t *testing.T) {
	src := newFakeSource()
	c := &fakeClient{in: msgs(t, &pgproto3.Query{String: "PAUSE"}, &pgproto3.Query{String: "PAUSE"})}
	s := NewSession(src, c, nil)
	round := 0
	src.pause = func(abandon func() bool) error {
		round++
		for i := 1; ; i++ {
			if round == 1 && i == 3 {
				s.Cancel()
			}
			if round == 2 && i == 2*goneCheckEvery-1 {
				c.gone = true
			}
			if abandon() {
				if round == 1 && i != 3 || round == 2 && i != 2*goneCheckEvery {
					t.Errorf("round %d abandoned at look %d", round, i)
				}
				return &PauseAbandonedError{Busy: 2}
			}
		}
	}
	s.Serve()
	wantTrace(t, trace(t, c.sent), "E 57014", "Z", "E 57014", "Z")
	if c.looks != 2 {
		t.Errorf("the socket was looked at %d times over %d looks, want 2", c.looks, 2*goneCheckEvery)
	}
}

// The Source's refusals reach the client with their SQLSTATEs.
func TestRefusalsKeepTheirSQLSTATEs(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{ErrShuttingDown, pgmsg.CodeAdminShutdown},
		{ErrAlreadyPaused, pgmsg.CodeObjectNotInPrerequisiteState},
		{ErrNotPaused, pgmsg.CodeObjectNotInPrerequisiteState},
		{&PauseAbandonedError{Busy: 3}, pgmsg.CodeQueryCanceled},
		{errors.New("other"), pgmsg.CodeInternalError},
	} {
		if pe := refusal(tc.err); pe.Code != tc.want || pe.Message == "" || pe.IsFatal() {
			t.Errorf("%v: %+v, want an ERROR %s", tc.err, pe, tc.want)
		}
	}
	if got := (&PauseAbandonedError{Busy: 3}).Error(); got != "PAUSE canceled while 3 client(s) were still in a transaction; pgsplit is not paused" {
		t.Errorf("PauseAbandonedError: %q", got)
	}
}

// RELOAD without a configuration file is 0A000; a refused file is 22023
// with the reason, and the running configuration stays.
func TestReloadRefusals(t *testing.T) {
	src := newFakeSource()
	src.reloadErr = ErrNoConfigFile
	c := &fakeClient{in: msgs(t, &pgproto3.Query{String: "RELOAD"})}
	NewSession(src, c, nil).Serve()
	src.reloadErr = errors.New("bad pool_size")
	c2 := &fakeClient{in: msgs(t, &pgproto3.Query{String: "reload"})}
	NewSession(src, c2, nil).Serve()
	src.reloadErr = nil
	c3 := &fakeClient{in: msgs(t, &pgproto3.Query{String: "RELOAD"})}
	NewSession(src, c3, nil).Serve()
	wantTrace(t, append(append(trace(t, c.sent), trace(t, c2.sent)...), trace(t, c3.sent)...), "E 0A000", "Z", "E 22023", "Z", "C RELOAD", "Z")
	f := pgproto3.NewFrontend(strings.NewReader(string(c2.sent)), nil)
	if m, _ := f.Receive(); m.(*pgproto3.ErrorResponse).Message != "reload refused; the running configuration stays: bad pool_size" {
		t.Errorf("reload error %q", m.(*pgproto3.ErrorResponse).Message)
	}
}
