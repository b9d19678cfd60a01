package admin

import (
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/internal/pgmsg"
)

// command is one admin console command: show builds a row set; run does
// something and returns the command tag.
type command struct {
	show func(Source) *resultSet
	run  func(*Session) (string, *pgmsg.Error)
}

// splitCommands splits an admin query at semicolons (admin commands have no
// quoted text) and drops empty ones; each has single spaces.
func splitCommands(sql string) []string {
	var out []string
	for _, part := range strings.Split(sql, ";") {
		if p := strings.Join(strings.Fields(part), " "); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// lookup finds cmd (case-insensitive, single spaces).
func lookup(cmd string) (command, bool) {
	key := strings.ToUpper(cmd)
	if strings.HasPrefix(key, "SET ") {
		// Drivers send SETs at connect (JDBC: extra_float_digits,
		// application_name); they mean nothing here and are accepted.
		return command{run: func(*Session) (string, *pgmsg.Error) { return "SET", nil }}, true
	}
	// Transaction control from drivers with autocommit off (JDBC) is
	// accepted too: the console has no transactions.
	for _, tx := range [][2]string{{"BEGIN", "BEGIN"}, {"START TRANSACTION", "BEGIN"}, {"COMMIT", "COMMIT"}, {"END", "COMMIT"}, {"ROLLBACK", "ROLLBACK"}} {
		if key == tx[0] {
			tag := tx[1]
			return command{run: func(*Session) (string, *pgmsg.Error) { return tag, nil }}, true
		}
	}
	return byName(key)
}

// byName returns the command named key (upper case).
func byName(key string) (command, bool) {
	switch key {
	case "SHOW HELP":
		return command{show: showHelp}, true
	case "SHOW POOLS":
		return command{show: showPools}, true
	case "SHOW STATS":
		return command{show: showStats}, true
	case "SHOW SERVERS":
		return command{show: showServers}, true
	case "SHOW CLIENTS":
		return command{show: showClients}, true
	case "SHOW DATABASES":
		return command{show: showDatabases}, true
	case "SHOW CONFIG":
		return command{show: showConfig}, true
	case "SHOW NODES":
		return command{show: showNodes}, true
	case "SHOW QUERIES":
		return command{show: showQueries}, true
	case "SHOW VERSION":
		return command{show: showVersion}, true
	case "RELOAD":
		return command{run: (*Session).reload}, true
	case "PAUSE":
		return command{run: (*Session).pause}, true
	case "RESUME":
		return command{run: (*Session).resume}, true
	case "SHUTDOWN":
		return command{run: (*Session).requestShutdown}, true
	case "RESET STATS":
		return command{run: (*Session).resetStats}, true
	}
	return command{}, false
}

func unknownCommand(cmd string) *pgmsg.Error {
	pe := pgmsg.Err(pgmsg.CodeSyntaxError, fmt.Sprintf("unknown admin console command: %q", cmd))
	pe.Detail = "The admin console takes SHOW HELP|POOLS|STATS|SERVERS|CLIENTS|DATABASES|CONFIG|NODES|QUERIES|VERSION, RELOAD, PAUSE, RESUME, SHUTDOWN, RESET STATS."
	return pe
}

// columns are the columns cmd answers with; nil for a command without
// rows.
func (s *Session) columns(cmd string) []column {
	c, ok := lookup(cmd)
	if !ok || c.show == nil {
		return nil
	}
	return c.show(s.src).cols
}

// runCommand runs one command.
func (s *Session) runCommand(cmd string) (*resultSet, *pgmsg.Error) {
	c, ok := lookup(cmd)
	if !ok {
		return nil, unknownCommand(cmd)
	}
	if c.show != nil {
		res := c.show(s.src)
		res.tag = "SHOW"
		return res, nil
	}
	tag, pe := c.run(s)
	if pe != nil {
		return nil, pe
	}
	switch tag {
	case "SET", "BEGIN", "COMMIT", "ROLLBACK":
	default:
		s.log.Info("admin command", zap.String("command", strings.ToUpper(cmd)))
	}
	return &resultSet{tag: tag}, nil
}

// refusal is the client's error for err from the Source's Pause or Resume.
func refusal(err error) *pgmsg.Error {
	var ab *PauseAbandonedError
	switch {
	case errors.Is(err, ErrShuttingDown):
		return pgmsg.Err(pgmsg.CodeAdminShutdown, err.Error())
	case errors.Is(err, ErrAlreadyPaused), errors.Is(err, ErrNotPaused):
		return pgmsg.Err(pgmsg.CodeObjectNotInPrerequisiteState, err.Error())
	case errors.As(err, &ab):
		return pgmsg.Err(pgmsg.CodeQueryCanceled, err.Error())
	}
	return pgmsg.Err(pgmsg.CodeInternalError, "pgsplit: "+err.Error())
}

func (s *Session) reload() (string, *pgmsg.Error) {
	err := s.src.ReloadFile()
	switch {
	case errors.Is(err, ErrNoConfigFile):
		return "", pgmsg.Err(pgmsg.CodeFeatureNotSupported, err.Error())
	case err != nil:
		return "", pgmsg.Err(pgmsg.CodeInvalidParameterValue, "reload refused; the running configuration stays: "+err.Error())
	}
	return "RELOAD", nil
}

// goneCheckEvery is how many of Pause's looks at the running transactions
// pass between looks at the admin's socket (each costs a millisecond).
const goneCheckEvery = 20

// pause closes the gate and waits until no client is inside a transaction
// or a statement. A cancel request (Ctrl-C in psql) or the admin leaving
// ends the wait and opens the gate again.
func (s *Session) pause() (string, *pgmsg.Error) {
	looks := 0
	abandon := func() bool {
		looks++
		return s.cancelled.Load() || (looks%goneCheckEvery == 0 && s.client.Gone())
	}
	if err := s.src.Pause(abandon); err != nil {
		return "", refusal(err)
	}
	return "PAUSE", nil
}

func (s *Session) resume() (string, *pgmsg.Error) {
	if err := s.src.Resume(); err != nil {
		return "", refusal(err)
	}
	return "RESUME", nil
}

// requestShutdown asks for a graceful shutdown once the answer is written
// (the drain would otherwise close the console before it).
func (s *Session) requestShutdown() (string, *pgmsg.Error) {
	s.shutdown = true
	return "SHUTDOWN", nil
}

func (s *Session) resetStats() (string, *pgmsg.Error) {
	s.src.ResetStats()
	return "RESET", nil
}
