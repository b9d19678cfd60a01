package proxy

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgsplit/pgsplit/config"
)

// trackerForTest is a tracker with one replica and one database, no
// goroutine: the test resolves commits and sets positions itself.
func trackerForTest() (*lsnTracker, *dbWrites, endpoint) {
	t := newLSNTracker(&Server{})
	ep := endpoint{"r", 1}
	t.replay[ep] = new(atomic.Uint64)
	return t, &dbWrites{tables: map[string]*mark{}}, ep
}

func tableNeed(t *lsnTracker, db *dbWrites, name string) needFunc {
	return func() (uint64, uint64) {
		lsn, seq := db.all.lsn, db.all.seq
		if m := db.tables[name]; m != nil {
			lsn, seq = max(lsn, m.lsn), max(seq, m.seq)
		}
		return lsn, seq
	}
}

// TestTrackerReadWaitsForItsCommitOnly: a read waits for the commit
// registered before it (position unknown, then a replica behind it) and is
// served once a replica has replayed it, not waiting for commits after it.
func TestTrackerReadWaitsForItsCommitOnly(t *testing.T) {
	tr, db, ep := trackerForTest()
	any := func(endpoint) bool { return true }
	tr.commit(db, writeScope{tables: []string{"messages"}}, nil, false)
	type result struct {
		lsn uint64
		ok  bool
	}
	done := make(chan result, 1)
	go func() {
		lsn, ok := tr.awaitReplica(tableNeed(tr, db, "messages"), 5*time.Second, any)
		done <- result{lsn, ok}
	}()
	time.Sleep(20 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("the read did not wait for a commit with no position yet: %+v", r)
	default:
	}
	tr.resolve(1, 100, 100, false)
	tr.commit(db, writeScope{tables: []string{"messages"}}, nil, false) // after the read arrived
	tr.resolve(2, 900, 900, false)
	tr.setReplayed(ep, 50)
	time.Sleep(20 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("served by a replica behind the commit: %+v", r)
	default:
	}
	tr.setReplayed(ep, 100)
	select {
	case r := <-done:
		if !r.ok || r.lsn != 100 {
			t.Fatalf("got %+v, want position 100 served (the later commit at 900 is not this read's)", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the read was not served once the replica replayed its commit")
	}
	// Other tables need nothing; a read of messages now needs 900.
	if lsn, ok := tr.awaitReplica(tableNeed(tr, db, "rooms"), 0, any); !ok || lsn != 0 {
		t.Errorf("untouched table: got %d %v, want 0 true", lsn, ok)
	}
	if lsn, ok := tr.awaitReplica(tableNeed(tr, db, "messages"), 10*time.Millisecond, any); ok || lsn != 900 {
		t.Errorf("after the second commit: got %d %v, want 900 false (no replica there; the primary reads)", lsn, ok)
	}
}

// TestRecordEnd: an insert position just past a page or segment header is
// the end of the record before it.
func TestRecordEnd(t *testing.T) {
	for in, want := range map[uint64]uint64{0x3000028: 0x3000000, 0x3002018: 0x3002000, 0x30024C0: 0x30024C0} {
		if got := recordEnd(in); got != want {
			t.Errorf("recordEnd(%X) = %X, want %X", in, got, want)
		}
	}
}

// TestSurvivingPositionOnlyOnceNoReplicaCanReceiveMore: commits left
// without a position by a primary that went away are resolved at the most
// WAL a replica received, but only when no replica still streams (the
// primary may be alive and sending) and every answering server is a
// replica with a known position.
func TestSurvivingPositionOnlyOnceNoReplicaCanReceiveMore(t *testing.T) {
	cases := []struct {
		name     string
		replicas []replicaWAL
		lsn      uint64
		ok       bool
	}{
		{"none answered", nil, 0, false},
		{"both stopped receiving", []replicaWAL{{received: 700, known: true}, {received: 900, known: true}}, 900, true},
		{"one still streams", []replicaWAL{{received: 700, known: true}, {received: 900, known: true, streaming: true}}, 0, false},
		{"one is out of recovery", []replicaWAL{{received: 700, known: true}, {}}, 0, false},
	}
	for _, c := range cases {
		if lsn, ok := survivingPosition(c.replicas); lsn != c.lsn || ok != c.ok {
			t.Errorf("%s: got %d %v, want %d %v", c.name, lsn, ok, c.lsn, c.ok)
		}
	}
}

// TestTrackerWaitsForTheFlushPositionOfSynchronousCommits: a read that
// arrived while its commit had no position waits for that commit's batch
// position: the flush position when every commit of the batch was
// synchronous (the insert position runs ahead of it under writes, and no
// replica can replay past the flush), the insert position when one may not
// be flushed yet.
func TestTrackerWaitsForTheFlushPositionOfSynchronousCommits(t *testing.T) {
	for _, async := range []bool{false, true} {
		tr, db, ep := trackerForTest()
		tr.commit(db, writeScope{tables: []string{"t"}}, nil, async)
		got := make(chan uint64, 1)
		go func() {
			lsn, _ := tr.awaitReplica(tableNeed(tr, db, "t"), 5*time.Second, func(endpoint) bool { return true })
			got <- lsn
		}()
		time.Sleep(20 * time.Millisecond) // the read waits with its commit pending
		tr.resolve(1, 100, 300, false)
		want := uint64(100)
		if async {
			want = 300
		}
		tr.setReplayed(ep, want)
		select {
		case lsn := <-got:
			if lsn != want {
				t.Errorf("async=%v: the read waited for %d, want %d", async, lsn, want)
			}
		case <-time.After(2 * time.Second):
			t.Errorf("async=%v: the read was not served once the replica replayed %d", async, want)
		}
	}
}

// TestMarkEverythingCoversDatabasesMetLater: after a failed upgrade's other
// process exited without saying which databases it wrote, a database this
// process had marks for and one it meets only later both wait for a
// commit position, resolved after the call; before the call, a database
// met for the first time has nothing to wait for.
func TestMarkEverythingCoversDatabasesMetLater(t *testing.T) {
	cfg := &config.Config{Routing: config.DefaultRouting()}
	cfg.Routing.ReadYourWrites = config.RYWTable
	srv := &Server{}
	srv.cfg.Store(cfg)
	tr := newLSNTracker(srv)
	if tr.writesFor("before").written.Load() {
		t.Fatal("a database met for the first time is marked written")
	}
	known := tr.writesFor("known")
	seq := tr.seq
	tr.markEverything()
	if !known.written.Load() || known.all.seq <= seq {
		t.Errorf("a known database is not marked: written=%v all.seq=%d (seq before %d)", known.written.Load(), known.all.seq, seq)
	}
	later := tr.writesFor("later")
	if !later.written.Load() || later.all.seq <= seq {
		t.Errorf("a database met after markEverything is not marked: written=%v all.seq=%d", later.written.Load(), later.all.seq)
	}
	again := tr.seq
	if tr.writesFor("later"); tr.seq != again {
		t.Errorf("meeting a database again registered another commit")
	}
}
