package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/relay"
	"github.com/mxguard/mxguard/resolver"
)

// loadConfig reads and validates the config file.
func loadConfig(path string) (*config.Config, error) {
	return config.Load(path)
}

// newLogger builds the JSON logger on stderr.
func newLogger(cfg *config.Config, w *os.File) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// newRedisClient returns a client for standalone, Sentinel (master_name set)
// or Cluster (several addresses) deployments.
func newRedisClient(r config.Redis) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs:        r.Addrs,
		MasterName:   r.MasterName,
		Username:     r.Username,
		Password:     r.Password,
		DB:           r.DB,
		DialTimeout:  r.Timeout,
		ReadTimeout:  r.Timeout,
		WriteTimeout: r.Timeout,
		// A dead Redis must fail fast: honour context deadlines and do not
		// retry for seconds (callers fall back or report).
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		DialerRetries:         1,
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 500 * time.Millisecond
		opts.ReadTimeout = 500 * time.Millisecond
		opts.WriteTimeout = 500 * time.Millisecond
	}
	return redis.NewUniversalClient(opts)
}

// newResolver builds the caching resolver; dnsOverride (a --dns flag) wins
// over the config.
func newResolver(cfg *config.Config, dnsOverride string) (*resolver.Resolver, error) {
	rc := resolver.Config{Timeout: cfg.DNS.Timeout, CacheSize: cfg.DNS.CacheSize}
	rc.Servers = cfg.DNS.Servers
	if dnsOverride != "" {
		rc.Servers = []string{dnsOverride}
	}
	return resolver.New(rc)
}

// newRelay turns the domains section into relay routes.
func newRelay(cfg *config.Config) (*relay.Relay, error) {
	routes := make(map[string]relay.Route, len(cfg.Domains))
	for name, d := range cfg.Domains {
		rt := relay.Route{TLS: relay.TLSMode(d.TLS)}
		for _, h := range d.Downstream {
			if dir, ok := strings.CutPrefix(h, config.MaildirPrefix); ok {
				rt.Maildir = dir
				continue
			}
			rt.Hosts = append(rt.Hosts, h)
		}
		routes[name] = rt
	}
	opts := relay.Options{
		HeloName:       cfg.Hostname,
		ConnectTimeout: cfg.Relay.ConnectTimeout,
		CommandTimeout: cfg.Relay.CommandTimeout,
		DataTimeout:    cfg.Relay.DataTimeout,
		// RFC 7435: on opportunistic routes an unverified certificate still
		// beats plaintext; required routes always verify.
		InsecureSkipVerify: true,
		PoolMaxIdle:        cfg.Relay.Pool.MaxIdle,
		PoolIdleTimeout:    cfg.Relay.Pool.IdleTimeout,
		PoolMaxUses:        cfg.Relay.Pool.MaxUses,
	}
	if cfg.Relay.CAFile != "" {
		pem, err := os.ReadFile(cfg.Relay.CAFile)
		if err != nil {
			return nil, fmt.Errorf("relay.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("relay.ca_file %s: no PEM certificate found", cfg.Relay.CAFile)
		}
		opts.RootCAs = pool
	}
	return relay.New(routes, opts)
}

// inboundTLS loads the STARTTLS certificate; nil when none is configured.
func inboundTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.TLS.Cert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
