package proxy

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/pgsplit/pgsplit/config"
	"github.com/pgsplit/pgsplit/nodes"
)

// SetReloader sets what the admin console's RELOAD runs: typically re-read
// the configuration file and call Reload, as on SIGHUP. Call it before
// Serve. Without one, RELOAD answers that it is not available.
func (s *Server) SetReloader(f func() error) { s.reloader = f }

// Reload applies a new configuration to what can change while running:
// auth.method and auth.users (for new logins), the tls section (new
// handshakes use the certificate files as they are now), max_client_conn,
// shutdown_timeout and the pool knobs. listen, servers, server_tls and
// log.format need a restart; changes to them are reported and ignored.
func (s *Server) Reload(cfg *config.Config) error {
	old := s.cfg.Load()
	if cfg.Listen != old.Listen {
		s.log.Warn("reload: listen changes need a restart; keeping the old value", zap.String("listen", old.Listen))
		cfg.Listen = old.Listen
	}
	if fmt.Sprint(cfg.Servers) != fmt.Sprint(old.Servers) {
		s.log.Warn("reload: servers changes need a restart; keeping the old list")
		cfg.Servers = old.Servers
	}
	if cfg.ServerTLS != old.ServerTLS {
		s.log.Warn("reload: server_tls changes need a restart; keeping the old values")
		cfg.ServerTLS = old.ServerTLS
	}
	// The certificate files are read again now: a file that does not load
	// refuses the whole reload, and the running certificate stays.
	front, err := newFrontTLS(cfg.TLS)
	if err != nil {
		return fmt.Errorf("reload refused: %w", err)
	}
	if err := s.checkLimits(context.Background(), cfg); err != nil {
		return err
	}
	if err := s.setAuth(cfg); err != nil {
		return err
	}
	s.front.Store(front)
	s.cfg.Store(cfg)
	if cfg.Log.File != old.Log.File {
		s.log.Warn("reload: log.file changes need a restart; keeping the old file", zap.String("log.file", old.Log.File))
	}
	s.qlog.cfg.Store(&cfg.Log)
	s.mu.Lock()
	secrets := map[string]string{}
	for _, u := range cfg.Auth.Users {
		secrets[u.Name] = u.Password
	}
	for k, p := range s.pools {
		p.SetLimits(poolLimits(&cfg.Pool))
		if pw, ok := secrets[k.user]; ok {
			p.SetPassword(pw) // a rotated password or verifier reaches the pools
		}
	}
	s.mu.Unlock()
	if len(cfg.Auth.Users) > 0 {
		s.catalogs.Refresh(cfg.Auth.ServiceUser())
	}
	s.log.Info("configuration reloaded")
	return nil
}

// checkLimits refuses cfg if its pools can open more connections on a
// server than the server allows, and logs each server's numbers. A server
// that cannot be asked is logged and not held against cfg: pgsplit starts
// while a replica is down.
func (s *Server) checkLimits(ctx context.Context, cfg *config.Config) error {
	limits, err := nodes.CheckLimits(ctx, cfg, s.currentPrimary().Addr())
	if err != nil {
		return err
	}
	for _, l := range limits {
		if l.Err != nil {
			s.log.Warn("connection limits not checked", zap.String("server", l.Server.Addr()), zap.Error(l.Err))
			continue
		}
		s.log.Info("connection limits", zap.String("server", l.Server.Addr()), zap.String("check", l.Formula()))
	}
	return nil
}
