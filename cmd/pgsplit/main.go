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
	takeover := fs.String(takeoverFlag, "", "serve: set by an upgrade (SIGUSR2) for the new process: inherited descriptors LISTEN,CONTROL[,METRICS]")
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
		return serve(*cfgPath, args, *takeover, stderr)
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

// serve runs the proxy until SIGINT or SIGTERM; SIGHUP reloads the file,
// SIGUSR2 upgrades to the binary at the path pgsplit was started from.
// takeover is set in the new process of an upgrade (see upgrade.go).
func serve(cfgPath string, args []string, takeover string, stderr io.Writer) error {
	var in *inherited
	if takeover != "" {
		var err error
		if in, err = inherit(takeover); err != nil {
			return err
		}
	}
	cfg, err := config.Load(cfgPath, os.Environ())
	if err != nil {
		return err
	}
	log, level, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	// The path now, while it names this binary: an upgrade starts what it
	// names then.
	self, err := os.Executable()
	if err != nil {
		log.Warn("the binary's path is unknown: SIGUSR2 upgrades are off", zap.Error(err))
	}
	args = append([]string{"serve"}, args...)
	return runProxy(context.Background(), cfg, cfgPath, log, level, nil, upgrades{self: self, args: args, in: in})
}

// upgrades is what runProxy needs for SIGUSR2 upgrades: the binary and
// arguments to start, and, in the new process of one, what it inherits.
type upgrades struct {
	self string
	args []string
	in   *inherited
}

// runProxy starts the server and blocks until a stop signal (or ctx ends).
// ready, if not nil, receives the listen address once clients can connect.
func runProxy(ctx context.Context, cfg *config.Config, cfgPath string, log *zap.Logger, level zap.AtomicLevel, ready chan<- string, up upgrades) error {
	srv, err := proxy.New(cfg, log)
	if err != nil {
		return err
	}
	if in := up.in; in != nil {
		if err := sameAddr(in.client, cfg.Listen); err != nil {
			return err
		}
		srv.UseListeners(in.client, in.metrics)
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

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)

	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	if err := notifySystemd(); err != nil {
		log.Warn("could not notify systemd (NOTIFY_SOCKET)", zap.Error(err))
	}
	if up.in != nil {
		if err := srv.TakeOver(up.in.link, up.in.parentGone); err != nil {
			log.Error("upgrade: could not tell the previous process this one serves", zap.Error(err))
		} else {
			log.Info("upgrade: serving; taking the previous process's clients over")
		}
	}
	// starting receives how starting an upgrade's new process went (it
	// runs beside this loop, so signals are still served meanwhile);
	// handedOver says how an upgrade under way ended: true, every client
	// moved away (exit); false, the new process failed after it took over
	// and this one serves again.
	var starting <-chan upgradeStart
	var handedOver <-chan bool
	upCtx, upCancel := context.WithCancel(ctx)
	defer upCancel()
	stopped := func() error {
		if starting != nil {
			upCancel() // a stop signal ends a new process not serving yet
			if r := <-starting; r.err != nil {
				log.Info("upgrade abandoned: this process stops", zap.Error(r.err))
			}
		}
		shutdown(srv, stop, log)
		return <-served
	}
	for {
		select {
		case <-hup:
			_ = reload()
		case <-usr2:
			if starting != nil || handedOver != nil || srv.Upgrading() {
				log.Warn("SIGUSR2 ignored: an upgrade is under way (this process is still starting the new one, handing clients over or taking them over)")
				continue
			}
			log.Info("upgrade requested (SIGUSR2)")
			ch := make(chan upgradeStart, 1)
			go func() {
				done, err := startUpgrade(upCtx, srv, up.self, up.args, log)
				ch <- upgradeStart{done, err}
			}()
			starting = ch
		case r := <-starting:
			starting = nil
			if r.err != nil {
				log.Error("upgrade failed; this process goes on serving", zap.Error(r.err))
				continue
			}
			handedOver = r.done
		case moved := <-handedOver:
			handedOver = nil
			if !moved {
				continue // serving again (Server.HandOver logged why)
			}
			log.Info("upgrade: no client left; exiting")
			return stopped()
		case <-srv.ShutdownRequested():
			log.Info("SHUTDOWN from the admin console")
			return stopped()
		case sig := <-stop:
			log.Info("signal received", zap.String("signal", sig.String()))
			return stopped()
		case <-ctx.Done():
			return stopped()
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
