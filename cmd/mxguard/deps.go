package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
	"github.com/mxguard/mxguard/relay"
	"github.com/mxguard/mxguard/resolver"
)

// deps are the backends the front end runs on, built from the config.
type deps struct {
	cfg      *config.Config
	log      *slog.Logger
	resolver *resolver.Resolver
	relay    *relay.Relay
	engine   *policy.Engine
	dlog     *policy.DecisionLog
	dlogFile io.Closer
	dlogBuf  *bufferedLog
	store    quarantine.Admin
	limiter  *filter.RateLimits

	stop    context.CancelFunc
	closers []func()
}

func buildDeps(cfg *config.Config, log *slog.Logger, reg *prometheus.Registry) (*deps, error) {
	d := &deps{cfg: cfg, log: log}
	var err error
	if d.resolver, err = newResolver(cfg, ""); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	reg.MustRegister(d.resolver.Collectors()...)
	if d.relay, err = newRelay(cfg); err != nil {
		return nil, fmt.Errorf("domains: %w", err)
	}
	reg.MustRegister(d.relay.Collectors()...)
	// Pooled downstream sessions get their QUIT when the gateway stops.
	d.closers = append(d.closers, func() { d.relay.Close() })
	if d.engine, err = newEngine(cfg); err != nil {
		return nil, err
	}
	reg.MustRegister(d.engine.Collectors()...)
	if err := d.openDecisionLog(); err != nil {
		d.close()
		return nil, err
	}
	if d.store, err = openQuarantineStore(cfg); err != nil {
		d.close()
		return nil, fmt.Errorf("quarantine: %w", err)
	}
	if c, ok := d.store.(io.Closer); ok {
		d.closers = append(d.closers, func() { c.Close() })
	}
	var closeLimiter func()
	if d.limiter, closeLimiter, err = newRateLimits(cfg, log, reg); err != nil {
		d.close()
		return nil, fmt.Errorf("ratelimit: %w", err)
	}
	d.closers = append(d.closers, closeLimiter)
	return d, nil
}

// newEngine loads the configured (or shipped) rules.
func newEngine(cfg *config.Config) (*policy.Engine, error) {
	e, err := policy.New(policy.Options{
		Dir:          cfg.Policy.Rules,
		AllowFile:    cfg.Policy.AllowFile,
		Enforce:      config.On(cfg.Policy.Enforce),
		Timeout:      cfg.Policy.Timeout,
		HeaderPrefix: policy.DefaultHeaderPrefix,
	})
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return e, nil
}

func (d *deps) openDecisionLog() error {
	var w io.Writer
	switch p := d.cfg.Policy.DecisionLog; p {
	case "":
		return nil
	case "stdout":
		w = os.Stdout
	default:
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return fmt.Errorf("policy.decision_log: %w", err)
		}
		w = f
		d.dlogFile = f
	}
	d.dlogBuf = newBufferedLog(w, decisionLogFlush)
	d.dlog = policy.NewDecisionLog(d.dlogBuf, d.cfg.Policy.Mask)
	return nil
}

// frontOptions turns the config and backends into the front end's options.
func frontOptions(cfg *config.Config, d *deps, log *slog.Logger) (filter.Options, error) {
	tlsCfg, err := inboundTLS(cfg)
	if err != nil {
		return filter.Options{}, err
	}
	var trusted []netip.Prefix
	for _, s := range cfg.ProxyProtocol.Trusted {
		p, err := config.ParsePrefix(s)
		if err != nil {
			return filter.Options{}, err
		}
		trusted = append(trusted, p)
	}
	opts := filter.Options{
		Hostname:        cfg.Hostname,
		TLSConfig:       tlsCfg,
		MaxMessageBytes: cfg.Limits.MaxMessageBytes,
		MaxRecipients:   cfg.Limits.MaxRecipients,
		MaxLineLength:   cfg.Limits.MaxLineLength,
		MaxErrors:       cfg.Limits.MaxErrors,
		MaxReceived:     cfg.Limits.MaxReceived,
		MaxHeaderBytes:  cfg.Limits.MaxHeaderBytes,
		CommandTimeout:  cfg.Limits.CommandTimeout,
		DataTimeout:     cfg.Limits.DataTimeout,
		MinDataRate:     cfg.Limits.MinDataRate,
		Normalize:       cfg.Data.LineEndings == "normalize",
		SpoolMemory:     cfg.Data.SpoolMemory,
		SpoolDir:        cfg.Data.SpoolDir,
		MemoryBudget:    filter.NewMemoryBudget(cfg.Data.MemoryBudget),
		Gate: filter.GateOptions{
			MaxConns:      cfg.Limits.MaxConns,
			MaxConnsPerIP: cfg.Limits.MaxConnsPerIP,
			ProxyTrusted:  trusted,
			ProxyTimeout:  cfg.ProxyProtocol.Timeout,
		},
		Router:     d.relay,
		Resolver:   d.resolver,
		Checks:     checksFromConfig(cfg),
		Policy:     d.engine,
		Quarantine: d.store,
		Headers: filter.HeaderOptions{
			Prefix:     policy.DefaultHeaderPrefix,
			Verdict:    config.On(cfg.Policy.Headers.Verdict),
			Reasons:    config.On(cfg.Policy.Headers.Reasons),
			DecisionID: config.On(cfg.Policy.Headers.DecisionID),
		},
		Logger:  log,
		Metrics: filter.NewMetrics(),
	}
	opts.DecisionLog = d.dlog
	if d.limiter != nil {
		opts.Limiter = d.limiter
	}
	return opts, nil
}

// checksFromConfig switches the authentication checks.
func checksFromConfig(cfg *config.Config) filter.Checks {
	return filter.Checks{
		SPF:               config.On(cfg.Auth.SPF),
		DKIM:              config.On(cfg.Auth.DKIM),
		DMARC:             config.On(cfg.Auth.DMARC),
		FCrDNS:            config.On(cfg.Auth.FCrDNS),
		Timeout:           cfg.Auth.Timeout,
		MaxDKIMSignatures: cfg.Auth.MaxDKIMSignatures,
	}
}

// startBackground runs the quarantine sweeper and the rules watcher.
func (d *deps) startBackground(ctx context.Context, wg *sync.WaitGroup) {
	ctx, d.stop = context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Hour)
		defer tick.Stop()
		for {
			if n, err := quarantine.Sweep(ctx, d.store, d.cfg.Quarantine.Retention, time.Now); err != nil {
				d.log.Warn("quarantine sweep failed", "err", err)
			} else if n > 0 {
				d.log.Info("quarantine sweep", "purged", n)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	// Watch also covers the allow file when the shipped rules are in use.
	if config.On(d.cfg.Policy.Reload) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.engine.Watch(ctx, func(rev string, err error) {
				if err != nil {
					d.log.Error("policy reload refused; the previous rules stay", "err", err)
					return
				}
				d.log.Info("policy reloaded", "revision", rev)
			})
		}()
	}
}

func (d *deps) stopBackground() {
	if d.stop != nil {
		d.stop()
	}
}

func (d *deps) reloadPolicy() (string, error) {
	if err := d.engine.Reload(); err != nil {
		return "", err
	}
	return d.engine.Revision(), nil
}

func (d *deps) revision() string { return d.engine.Revision() }

func (d *deps) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.closers = nil
	if d.dlogBuf != nil {
		d.dlogBuf.Close()
		d.dlogBuf = nil
	}
	if d.dlogFile != nil {
		d.dlogFile.Close()
		d.dlogFile = nil
	}
}
