package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"
	"time"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/pgcluster"
)

// demo starts a throwaway primary and two streaming replicas in a temporary
// folder, runs pgsplit in front of them, prints how to connect, and removes
// everything on Ctrl-C.
func demo(stdout, stderr io.Writer) error {
	if _, err := pgcluster.FindBinDir(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fmt.Fprintln(stdout, "pgsplit demo: starting a PostgreSQL primary and 2 streaming replicas (a few seconds)…")
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Replicas: 2, AppAuth: config.AuthSCRAM, Log: stderr})
	if err != nil {
		return fmt.Errorf("demo cluster: %w", err)
	}
	defer func() {
		fmt.Fprintln(stdout, "pgsplit demo: stopping the servers and removing", cl.Dir)
		if err := cl.Stop(); err != nil {
			fmt.Fprintln(stderr, "pgsplit demo:", err)
		}
	}()
	if ctx.Err() != nil {
		return nil
	}

	listen := "127.0.0.1:6432"
	if ln, err := net.Listen("tcp", listen); err != nil {
		port, perr := pgcluster.FreePort()
		if perr != nil {
			return perr
		}
		listen = fmt.Sprintf("127.0.0.1:%d", port)
	} else {
		_ = ln.Close()
	}
	servers := []config.Server{{Host: cl.Primary.Host, Port: cl.Primary.Port, Role: config.RolePrimary}}
	for _, r := range cl.Replicas {
		servers = append(servers, config.Server{Host: r.Host, Port: r.Port, Role: config.RoleReplica, Weight: 1})
	}
	cfg := &config.Config{
		Listen:        listen,
		MaxClientConn: 1000,
		Servers:       servers,
		Auth:          config.Auth{Method: config.AuthSCRAM, Users: []config.User{{Name: "app", Password: "app"}}},
		Pool: config.Pool{Mode: config.ModeTransaction, Profile: config.ProfileDevelopment, PoolSize: 5, MaxOverflow: 10,
			PoolTimeout: 30 * time.Second, PoolRecycle: time.Hour, PoolPrePing: true, OverflowIdleTimeout: time.Minute, ConnectTimeout: 5 * time.Second,
			MaxPreparedStatements: 200, ResetAfterFunctions: true},
		Routing:         config.DefaultRouting(),
		Log:             demoLog(),
		Limits:          config.DefaultLimits(),
		ShutdownTimeout: 5 * time.Second,
	}
	if problems := cfg.Validate(); len(problems) > 0 {
		return &config.Error{Problems: problems}
	}
	log, level, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	stop() // from here on runProxy handles SIGINT/SIGTERM itself
	ready := make(chan string, 1)
	go func() {
		addr := <-ready
		fmt.Fprintf(stdout, `
pgsplit demo is running (Ctrl-C stops everything and removes %s)

  primary   127.0.0.1:%d
  replicas  %s
  pgsplit   %s

  DATABASE_URL=postgres://app:app@%s/app?sslmode=disable

  try:  psql "postgres://app:app@%s/app?sslmode=disable" -c 'SELECT now(), pg_backend_pid()'

`, cl.Dir, cl.Primary.Port, replicaList(cl), addr, addr, addr)
	}()
	return runProxy(context.Background(), cfg, "", log, level, ready, upgrades{})
}

func replicaList(cl *pgcluster.Cluster) string {
	s := ""
	for i, r := range cl.Replicas {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("127.0.0.1:%d", r.Port)
	}
	return s
}

// demoLog logs for a human at a terminal.
func demoLog() config.Log {
	l := config.DefaultLog()
	l.Format = "console"
	return l
}
