// Command pgsplit is a PostgreSQL wire-protocol proxy: it pools upstream
// connections, sends reads to replicas and writes to the primary, and logs
// each statement's timing.
//
//	pgsplit [serve] [--config FILE]   run the proxy (default)
//	pgsplit check   [--config FILE]   load and validate the configuration
//	pgsplit demo                      throwaway primary + 2 replicas + proxy
//	pgsplit classify [--session]      where statements from stdin would go
//	pgsplit slowlog [FILE…]           digest of the JSON query log by fingerprint
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/internal/version"
	"github.com/pgsplit/pgsplit/nodes"
	"github.com/pgsplit/pgsplit/proxy"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pgsplit:", err)
		var ce *config.Error
		if errors.As(err, &ce) {
			os.Exit(2) // the configuration is invalid
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "slowlog":
		return slowlog(args, os.Stdin, stdout, stderr)
	case "version":
		if len(args) > 0 {
			return fmt.Errorf("version takes no arguments (got %q)", args[0])
		}
		fmt.Fprintln(stdout, version.Get())
		return nil
	}
	fs := flag.NewFlagSet("pgsplit "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", defaultConfigPath(), "configuration file (YAML)")
	sessionMode := fs.Bool("session", false, "classify: the lines are one session's statements in order")
	database := fs.String("database", "", "classify: database whose pg_proc gives function volatility (default: the first auth user's name)")
	cpuProfile := fs.String("cpuprofile", "", "serve: write a CPU profile (pprof) to this file until shutdown")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch cmd {
	case "serve":
		if *cpuProfile != "" {
			f, err := os.Create(*cpuProfile)
			if err != nil {
				return err
			}
			defer f.Close()
			if err := pprof.StartCPUProfile(f); err != nil {
				return err
			}
			defer pprof.StopCPUProfile()
		}
		return serve(*cfgPath, stderr)
	case "check":
		cfg, err := config.Load(*cfgPath, os.Environ())
		if err != nil {
			return err
		}
		return check(*cfgPath, cfg, stdout)
	case "demo":
		return demo(stdout, stderr)
	case "classify":
		return classify(*cfgPath, *database, *sessionMode, os.Stdin, stdout, stderr)
	case "help":
		fmt.Fprintln(stdout, "usage: pgsplit [serve|check|demo|classify [--session]] [--config FILE]\n       pgsplit version\n       pgsplit slowlog [--top N] [--since T] [--until T] [--min-duration D] [--format table|json|markdown] [FILE…]")
		return nil
	}
	return fmt.Errorf("unknown command %q (use serve, check, demo, classify, slowlog or version)", cmd)
}

// check validates the configuration, then asks every server for its
// connection limits and prints, per server, what pgsplit may open there and
// what remains for others. It fails when a server can be exceeded or
// cannot be asked.
func check(path string, cfg *config.Config, stdout io.Writer) error {
	name := path
	if name == "" {
		name = "(defaults and environment)"
	}
	fmt.Fprintf(stdout, "configuration %s is valid: listen %s, %d server(s), pool.mode %s, pool_size %d + max_overflow %d per pool (profile %s)\n",
		name, cfg.Listen, len(cfg.Servers), cfg.Pool.Mode, cfg.Pool.PoolSize, cfg.Pool.MaxOverflow, cfg.Pool.Profile)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primary := ""
	if p, ok := cfg.Primary(); ok {
		primary = p.Addr()
	}
	limits, err := nodes.CheckLimits(ctx, cfg, primary)
	unreachable := 0
	for _, l := range limits {
		fmt.Fprintln(stdout, l.Formula())
		if l.Err != nil {
			unreachable++
		}
	}
	if err != nil {
		return err
	}
	if unreachable > 0 {
		return fmt.Errorf("%d server(s) could not be checked", unreachable)
	}
	fmt.Fprintln(stdout, "connection limits: ok")
	return nil
}

// defaultConfigPath is ./config.yaml when it exists, else none (defaults
// plus environment).
func defaultConfigPath() string {
	if _, err := os.Stat("config.yaml"); err == nil {
		return "config.yaml"
	}
	return ""
}

// newLogger builds the process logger; level can be changed on reload.
func newLogger(cfg config.Log, w io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zap.ParseAtomicLevel(cfg.Level)
	if err != nil {
		return nil, lvl, err
	}
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if cfg.Format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), lvl)), lvl, nil
}

// serve runs the proxy until SIGINT or SIGTERM; SIGHUP reloads the file.
func serve(cfgPath string, stderr io.Writer) error {
	cfg, err := config.Load(cfgPath, os.Environ())
	if err != nil {
		return err
	}
	log, level, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	return runProxy(context.Background(), cfg, cfgPath, log, level, nil)
}

// runProxy starts the server and blocks until a stop signal (or ctx ends).
// ready, if not nil, receives the listen address once clients can connect.
func runProxy(ctx context.Context, cfg *config.Config, cfgPath string, log *zap.Logger, level zap.AtomicLevel, ready chan<- string) error {
	srv, err := proxy.New(cfg, log)
	if err != nil {
		return err
	}
	if err := srv.Listen(ctx); err != nil {
		return err
	}
	if ready != nil {
		ready <- srv.Addr().String()
	}
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(stop)
	defer signal.Stop(hup)

	// reload re-reads the file (SIGHUP and the admin console's RELOAD).
	var reloadMu sync.Mutex
	reload := func() error {
		reloadMu.Lock()
		defer reloadMu.Unlock()
		ncfg, err := config.Load(cfgPath, os.Environ())
		if err == nil {
			err = srv.Reload(ncfg)
		}
		if err != nil {
			log.Error("reload refused; keeping the running configuration", zap.Error(err))
			return err
		}
		if err := level.UnmarshalText([]byte(ncfg.Log.Level)); err != nil {
			log.Error("reload: bad log.level", zap.Error(err))
		}
		return nil
	}
	if cfgPath != "" {
		srv.SetReloader(reload)
	} else {
		// demo, or serve from the environment only: nothing to re-read.
		reload = func() error {
			log.Warn("reload ignored: pgsplit was started without a configuration file")
			return nil
		}
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	for {
		select {
		case <-hup:
			_ = reload()
		case <-srv.ShutdownRequested():
			log.Info("SHUTDOWN from the admin console")
			shutdown(srv, stop, log)
			return <-served
		case sig := <-stop:
			log.Info("signal received", zap.String("signal", sig.String()))
			shutdown(srv, stop, log)
			return <-served
		case <-ctx.Done():
			shutdown(srv, stop, log)
			return <-served
		case err := <-served:
			return err
		}
	}
}

// shutdown drains the server; a second signal cuts the wait short.
func shutdown(srv *proxy.Server, stop <-chan os.Signal, log *zap.Logger) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
			log.Warn("second signal: disconnecting everyone now")
			cancel()
		case <-ctx.Done():
		}
	}()
	srv.Shutdown(ctx)
}
