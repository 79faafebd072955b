package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/filter"
)

// runServe runs the gateway until SIGTERM/SIGINT.
func runServe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", config.DefaultPath, "config file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %s:\n%v\n", *cfgPath, err)
		return 1
	}
	log := newLogger(cfg, os.Stderr)
	gcPercent, memLimit := applyRuntime(cfg.Runtime, cfg.Data.MemoryBudget, os.Getenv)
	g, err := build(cfg, log)
	if err != nil {
		log.Error("startup failed", "err", err)
		return 1
	}
	defer g.close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	if err := g.start(ctx); err != nil {
		log.Error("startup failed", "err", err)
		return 1
	}
	log.Info("mxguard started", "version", version, "listen", cfg.Listen, "admin", cfg.Admin.Listen,
		"domains", len(cfg.Domains), "policy_revision", g.revision(), "gc_percent", gcPercent, "memory_limit", memLimit)

	for {
		select {
		case <-hup:
			g.reload()
		case <-ctx.Done():
			log.Info("shutting down", "grace", cfg.Shutdown.Grace.String())
			g.ready.Store(false)
			sctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Grace)
			err := g.front.Shutdown(sctx)
			cancel()
			if err != nil {
				log.Warn("shutdown deadline passed; remaining sessions closed", "err", err)
			}
			g.wait()
			log.Info("stopped")
			return 0
		}
	}
}

// gateway is the wired program: front end, admin server and background work.
type gateway struct {
	cfg      *config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	front    *filter.Server
	deps     *deps
	ready    atomic.Bool
	admin    *http.Server
	wg       sync.WaitGroup
	closers  []func()
	reloader func() (string, error)
}

// build wires the config into a gateway without opening any socket.
func build(cfg *config.Config, log *slog.Logger) (*gateway, error) {
	g := &gateway{cfg: cfg, log: log, reg: prometheus.NewRegistry()}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	if cfg.Data.SpoolDir != "" {
		if err := os.MkdirAll(cfg.Data.SpoolDir, 0o700); err != nil {
			return nil, fmt.Errorf("data.spool_dir: %w", err)
		}
	}
	if n, err := filter.CleanSpoolDir(cfg.Data.SpoolDir); err == nil && n > 0 {
		log.Info("removed spool files left by a crash", "count", n)
	}

	d, err := buildDeps(cfg, log, g.reg)
	if err != nil {
		g.close()
		return nil, err
	}
	g.deps = d
	g.closers = append(g.closers, d.close)

	opts, err := frontOptions(cfg, d, log)
	if err != nil {
		g.close()
		return nil, err
	}
	front, err := filter.NewServer(opts)
	if err != nil {
		g.close()
		return nil, err
	}
	g.reg.MustRegister(opts.Metrics.Collectors()...)
	g.front = front
	return g, nil
}

// start opens the listeners and the admin endpoint.
func (g *gateway) start(ctx context.Context) error {
	var lns []net.Listener
	for _, addr := range g.cfg.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		lns = append(lns, l)
	}
	if g.cfg.Admin.Listen != "" {
		al, err := net.Listen("tcp", g.cfg.Admin.Listen)
		if err != nil {
			for _, o := range lns {
				o.Close()
			}
			return fmt.Errorf("admin listen %s: %w", g.cfg.Admin.Listen, err)
		}
		g.admin = &http.Server{Handler: g.adminMux(), ReadHeaderTimeout: 5 * time.Second}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := g.admin.Serve(al); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Error("admin server failed", "err", err)
			}
		}()
	}
	for _, l := range lns {
		g.wg.Add(1)
		go func(l net.Listener) {
			defer g.wg.Done()
			if err := g.front.Serve(l); err != nil {
				g.log.Error("smtp listener failed", "addr", l.Addr().String(), "err", err)
			}
		}(l)
	}
	g.deps.startBackground(ctx, &g.wg)
	g.ready.Store(true)
	return nil
}

func (g *gateway) adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
	if g.cfg.Admin.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if !g.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}

func (g *gateway) reload() {
	rev, err := g.deps.reloadPolicy()
	if err != nil {
		g.log.Error("policy reload refused; the previous rules stay", "err", err)
		return
	}
	g.log.Info("policy reloaded", "revision", rev)
}

func (g *gateway) revision() string { return g.deps.revision() }

// wait stops the admin server and waits for the goroutines.
func (g *gateway) wait() {
	if g.admin != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = g.admin.Shutdown(ctx)
		cancel()
	}
	g.deps.stopBackground()
	g.wg.Wait()
}

func (g *gateway) close() {
	for i := len(g.closers) - 1; i >= 0; i-- {
		g.closers[i]()
	}
	g.closers = nil
}
