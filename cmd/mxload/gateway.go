package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mxguard/mxguard/internal/loadenv"
)

// gwSpec is one gateway configuration under test.
type gwSpec struct {
	checks   bool   // path 2: every check on; path 3: relay only
	dnsAddr  string // authoritative server for the sender domains
	sinkAddr string
	redis    string // ratelimit backend address (checks only)
	maxConns int    // limits.max_conns and max_conns_per_ip
	pprof    bool
}

// gateway is a running `mxguard serve` process.
type gateway struct {
	cmd    *exec.Cmd
	dir    string
	addr   string
	admin  string
	stderr *os.File
	exited chan error
}

// buildGateway compiles ./cmd/mxguard into dir (from the module root).
func buildGateway(root, dir string) (string, error) {
	bin := filepath.Join(dir, "mxguard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mxguard")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/mxguard: %w\n%s", err, out)
	}
	return bin, nil
}

// moduleRoot walks up from the working directory to go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// gatewayConfig renders the YAML config of spec with the listeners given.
func gatewayConfig(s gwSpec, dir, listen, admin string) string {
	var b strings.Builder
	maxConns := s.maxConns
	if maxConns <= 0 {
		maxConns = 2000
	}
	fmt.Fprintf(&b, "hostname: mx.mxload.test\nlisten: [%q]\n", listen)
	fmt.Fprintf(&b, "limits: {max_conns: %d, max_conns_per_ip: %d, max_message_bytes: 33554432}\n", maxConns, maxConns)
	fmt.Fprintf(&b, "data: {spool_dir: %q}\n", filepath.Join(dir, "spool"))
	fmt.Fprintf(&b, "dns: {servers: [%q], timeout: 2s}\n", s.dnsAddr)
	fmt.Fprintf(&b, "domains:\n  %s: {downstream: [%q], tls: none}\n", rcptDomain, s.sinkAddr)
	fmt.Fprintf(&b, "quarantine: {backend: dir, dir: %q}\n", filepath.Join(dir, "quarantine"))
	fmt.Fprintf(&b, "admin: {listen: %q, pprof: %v}\n", admin, s.pprof)
	b.WriteString("log: {level: warn}\n")
	if s.checks {
		b.WriteString("auth: {spf: true, dkim: true, dmarc: true, fcrdns: true}\n")
		// Limits far above what the run can reach: counted on Redis, never
		// hit. The GCRA works in whole microseconds per event, so a rate
		// above 1,000,000 per second is clamped to that (ratelimit/gcra.go);
		// the huge burst (tolerance of ~11 days at that rate) keeps the
		// byte dimensions from ever filling up.
		fmt.Fprintf(&b, "ratelimit:\n  backend: redis\n  redis: {addrs: [%q], timeout: 500ms}\n  limits:\n", s.redis)
		for _, dim := range []string{"client_ip_connections", "client_ip", "mail_from_domain", "rcpt", "client_ip_bytes", "dkim_domain"} {
			fmt.Fprintf(&b, "    %s: {rate: 1000000, per: 1s, burst: 1000000000000}\n", dim)
		}
		fmt.Fprintf(&b, "policy: {decision_log: %q, reload: false}\n", filepath.Join(dir, "decisions.jsonl"))
	} else {
		b.WriteString("auth: {spf: false, dkim: false, dmarc: false, fcrdns: false}\n")
		b.WriteString("policy: {decision_log: \"\", reload: false}\n")
	}
	return b.String()
}

// startGateway writes the config into a fresh directory under parent,
// starts bin on it and waits (at most 30 s) until /readyz answers.
func startGateway(bin, parent string, s gwSpec) (*gateway, error) {
	return startGatewayWith(bin, parent, func(dir, listen, admin string) (string, error) {
		return gatewayConfig(s, dir, listen, admin), nil
	})
}

// startGatewayWith writes the config render returns into a fresh
// directory under parent (render gets the directory and the listen
// addresses), starts bin on it and waits (at most 30 s) until /readyz
// answers. Each start gets its own directory (config, stderr.log); a spool
// dir in the config may be shared between starts.
func startGatewayWith(bin, parent string, render func(dir, listen, admin string) (string, error)) (*gateway, error) {
	dir, err := os.MkdirTemp(parent, "gw-")
	if err != nil {
		return nil, err
	}
	p1, err := loadenv.FreePort()
	if err != nil {
		return nil, err
	}
	p2, err := loadenv.FreePort()
	if err != nil {
		return nil, err
	}
	g := &gateway{dir: dir, addr: "127.0.0.1:" + strconv.Itoa(p1), admin: "127.0.0.1:" + strconv.Itoa(p2), exited: make(chan error, 1)}
	text, err := render(dir, g.addr, g.admin)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "mxguard.yaml")
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		return nil, err
	}
	if g.stderr, err = os.Create(filepath.Join(dir, "stderr.log")); err != nil {
		return nil, err
	}
	g.cmd = exec.Command(bin, "serve", "--config", cfg)
	g.cmd.Dir = dir
	g.cmd.Stdout = g.stderr
	g.cmd.Stderr = g.stderr
	if err := g.cmd.Start(); err != nil {
		g.stderr.Close()
		return nil, fmt.Errorf("start mxguard: %w", err)
	}
	go func() { g.exited <- g.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if body, err := g.get("/readyz", 2*time.Second); err == nil && strings.HasPrefix(body, "ready") {
			return g, nil
		}
		select {
		case err := <-g.exited:
			g.exited <- err
			log, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			g.stderr.Close()
			return nil, fmt.Errorf("mxguard exited at start (%v):\n%s", err, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			g.stop()
			return nil, errors.New("mxguard not ready within 30s")
		}
	}
}

func (g *gateway) pid() int { return g.cmd.Process.Pid }

// get fetches an admin URL path.
func (g *gateway) get(path string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.admin+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// fetch saves an admin URL path into file.
func (g *gateway) fetch(path, file string, timeout time.Duration) error {
	body, err := g.get(path, timeout)
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

// errorLines returns up to n ERROR lines of the gateway's JSON log.
func (g *gateway) errorLines(n int) []string {
	b, err := os.ReadFile(filepath.Join(g.dir, "stderr.log"))
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"level":"ERROR"`) {
			if len(line) > 400 {
				line = line[:400]
			}
			out = append(out, line)
			if len(out) == n {
				break
			}
		}
	}
	return out
}

// stop sends SIGTERM, waits up to 10 s, then kills; it returns the tail of
// the gateway's log for diagnostics.
func (g *gateway) stop() string {
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
	}
	g.stderr.Close()
	b, _ := os.ReadFile(filepath.Join(g.dir, "stderr.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
