package proxy

import (
	"testing"

	"github.com/pgsplit/pgsplit/router"
)

// TestOwnStartupParametersStayOffTheServer: pgsplit.* startup parameters,
// at the top level or in options, never become server settings; the
// commit-position switch takes on/off, and anything else pgsplit.* is
// refused by name.
func TestOwnStartupParametersStayOffTheServer(t *testing.T) {
	params := map[string]string{"user": "u", "options": "-c pgsplit.report_commit_lsn=on -c work_mem=8MB", "application_name": "a"}
	set, own, err := startupSettings(params)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set["pgsplit.report_commit_lsn"]; ok || len(set) != 2 {
		t.Errorf("server settings %v: want work_mem and application_name only", set)
	}
	report, err := ownStartup(own, params)
	if err != nil || !report {
		t.Errorf("options -c pgsplit.report_commit_lsn=on: got %v, %v", report, err)
	}
	top := map[string]string{"user": "u", "PGSPLIT.report_commit_lsn": "off"}
	_, own, _ = startupSettings(top)
	if report, err := ownStartup(own, top); err != nil || report {
		t.Errorf("=off: got %v, %v", report, err)
	}
	if _, ok := top["PGSPLIT.report_commit_lsn"]; ok {
		t.Error("the top-level parameter was left for the login cache to compare")
	}
	bad := map[string]string{"user": "u", "pgsplit.report_commit_lsn": "sometimes"}
	_, own, _ = startupSettings(bad)
	if _, err := ownStartup(own, bad); err == nil {
		t.Error("pgsplit.report_commit_lsn=sometimes was accepted")
	}
	if _, _, err := startupSettings(map[string]string{"pgsplit.route": "primary"}); err == nil {
		t.Error("pgsplit.route at login was accepted (it is set with SET)")
	}
}

// TestMinLSNRaisesEveryReadsNeed: SET pgsplit.min_lsn parses a WAL
// position, refuses anything else, and raises what every read must see;
// RESET and 0/0 take it away.
func TestMinLSNRaisesEveryReadsNeed(t *testing.T) {
	s := &session{}
	if need := s.withMinLSN(nil); need != nil {
		t.Fatal("no min_lsn, no need: want nil")
	}
	if v, err := s.applyMinLSN(router.Statement{Kind: router.KindSet, SetValue: "'0/3000060'"}); err != nil || v != "0/3000060" {
		t.Fatalf("SET '0/3000060': got %q, %v", v, err)
	}
	if lsn, _ := s.withMinLSN(nil)(); lsn != 0x3000060 {
		t.Errorf("need with nothing written: %X, want 3000060", lsn)
	}
	if lsn, seq := s.withMinLSN(func() (uint64, uint64) { return 0x4000000, 7 })(); lsn != 0x4000000 || seq != 7 {
		t.Errorf("need past min_lsn: %X %d, want 4000000 7", lsn, seq)
	}
	if _, err := s.applyMinLSN(router.Statement{Kind: router.KindSet, SetValue: "'yesterday'"}); err == nil || s.minLSN != 0x3000060 {
		t.Errorf("SET 'yesterday': err %v, min_lsn %X (want an error and no change)", err, s.minLSN)
	}
	if v, _ := s.applyMinLSN(router.Statement{Kind: router.KindReset}); v != "0/0" || s.withMinLSN(nil) != nil {
		t.Errorf("RESET: SHOW %q, want 0/0 and no need", v)
	}
}
