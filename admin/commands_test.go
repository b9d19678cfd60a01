package admin

import (
	"slices"
	"strings"
	"testing"
)

// Commands split at semicolons, with runs of white space made one space
// and empty commands dropped.
func TestSplitCommandsNormalizesSpacesAndDropsEmptyOnes(t *testing.T) {
	for sql, want := range map[string][]string{
		"":                            nil,
		" ; ;\n":                      nil,
		"SHOW  POOLS":                 {"SHOW POOLS"},
		"show\tpools;\n reset stats;": {"show pools", "reset stats"},
	} {
		if got := splitCommands(sql); !slices.Equal(got, want) {
			t.Errorf("splitCommands(%q) = %q, want %q", sql, got, want)
		}
	}
}

// Commands are found whatever their case; drivers' SETs and transaction
// control are accepted and answered with their tags.
func TestLookupAcceptsAnyCaseAndDriverNoise(t *testing.T) {
	for _, cmd := range []string{"show pools", "Show Nodes", "reset stats", "pause"} {
		if _, ok := lookup(cmd); !ok {
			t.Errorf("%q not found", cmd)
		}
	}
	for cmd, tag := range map[string]string{
		"SET extra_float_digits = 3": "SET", "set application_name = 'x'": "SET",
		"BEGIN": "BEGIN", "start transaction": "BEGIN", "COMMIT": "COMMIT", "end": "COMMIT", "ROLLBACK": "ROLLBACK",
	} {
		c, ok := lookup(cmd)
		if !ok || c.run == nil {
			t.Errorf("%q not accepted", cmd)
			continue
		}
		if got, pe := c.run(nil); got != tag || pe != nil {
			t.Errorf("%q: tag %q, %v; want %q", cmd, got, pe, tag)
		}
	}
	for _, cmd := range []string{"SHOW", "SHOW POOLS EXTRA", "SELECT 1", "SETTINGS"} {
		if _, ok := lookup(cmd); ok {
			t.Errorf("%q found", cmd)
		}
	}
}

// Every command SHOW HELP lists exists, and every SHOW answers with rows.
func TestEveryCommandInHelpExists(t *testing.T) {
	for _, row := range showHelp(nil).rows {
		cmd := row[0].(string)
		c, ok := lookup(cmd)
		if !ok {
			t.Errorf("SHOW HELP lists %q, which is not a command", cmd)
		}
		if strings.HasPrefix(cmd, "SHOW ") && c.show == nil {
			t.Errorf("%q has no rows", cmd)
		}
	}
}

// An unknown command is a syntax error whose detail lists the commands.
func TestUnknownCommandIsASyntaxErrorListingTheCommands(t *testing.T) {
	pe := unknownCommand("SHOW NOTHING")
	if pe.Code != "42601" || pe.IsFatal() || pe.Message != `unknown admin console command: "SHOW NOTHING"` || !strings.Contains(pe.Detail, "RESET STATS") {
		t.Errorf("%+v", pe)
	}
}
