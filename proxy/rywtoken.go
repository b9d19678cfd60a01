package proxy

import (
	"errors"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/router"
)

// This file is the causal token: a client that logs in with
// pgsplit.report_commit_lsn=on gets each commit's WAL position as
// ParameterStatus pgsplit.commit_lsn, before the commit's ReadyForQuery;
// SET pgsplit.min_lsn = that position, on any connection of any pgsplit
// instance, sends that session's reads only to replicas that have replayed
// it (or, after read_your_writes_wait, to the primary).

// commitLSNStatus is the ParameterStatus that reports a commit's position.
const commitLSNStatus = "pgsplit.commit_lsn"

// errMinLSNValue: SET pgsplit.min_lsn got something that is not a WAL
// position.
var errMinLSNValue = errors.New(`invalid value for parameter "pgsplit.min_lsn": use a WAL position such as 0/3000060 (what pgsplit.commit_lsn reports), or 0/0 for none`)

// applyMinLSN applies SET/RESET pgsplit.min_lsn and returns the value SHOW
// reports.
func (s *session) applyMinLSN(st router.Statement) (string, error) {
	switch st.Kind {
	case router.KindReset:
		s.minLSN = 0
	case router.KindSet:
		v := st.PlainSetValue()
		if st.SetDefault || v == "" || strings.EqualFold(v, "default") {
			s.minLSN = 0
			break
		}
		lsn, err := nodes.ParseLSN(v)
		if err != nil {
			return "", errMinLSNValue
		}
		s.minLSN = lsn
	}
	return nodes.FormatLSN(s.minLSN), nil
}

// withMinLSN is need raised to the session's pgsplit.min_lsn (need may be
// nil: nothing else to see).
func (s *session) withMinLSN(need needFunc) needFunc {
	floor := s.minLSN
	if floor == 0 {
		return need
	}
	if need == nil {
		return func() (uint64, uint64) { return floor, 0 }
	}
	return func() (uint64, uint64) {
		lsn, seq := need()
		return max(lsn, floor), seq
	}
}

// tokenWait bounds how long a commit's ReadyForQuery waits for its token
// (and pool.connect_timeout, if shorter: what the position query may
// take): the tracker may be busy with a replica that does not answer.
const tokenWait = time.Second

// await waits, up to wait, until commit seq, registered with m, has its
// position from the primary, and returns m's position then: at or past the
// commit (a later barrier may have raised it). False: none in time, or
// only the replicas' after the primary was lost.
func (t *lsnTracker) await(m *mark, seq uint64, wait time.Duration) (uint64, bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		t.mu.Lock()
		if t.resolved >= seq {
			lsn, ok := m.lsn, seq > t.fallbackSeq
			t.mu.Unlock()
			return lsn, ok
		}
		ch := t.changed
		t.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return 0, false
		}
	}
}

// writeCommitLSN writes ParameterStatus pgsplit.commit_lsn = lsn to the
// client, ahead of the commit's ReadyForQuery (the pump holds the client's
// writer while it waits for the position: the session is behind this
// answer, so nothing else is due to the client meanwhile).
func writeCommitLSN(w io.Writer, lsn uint64) error {
	b, err := (&pgproto3.ParameterStatus{Name: commitLSNStatus, Value: nodes.FormatLSN(lsn)}).Encode(nil)
	if err == nil {
		_, err = w.Write(b)
	}
	return err
}
