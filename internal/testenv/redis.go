// Package testenv starts real servers on loopback for tests: an authoritative
// DNS server serving zones from testdata, a recording downstream SMTP server,
// and redis-server instances on free ports.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/loadenv"
)

// Redis is a redis-server process started for one test.
type Redis struct {
	Addr string
	Port int
	Dir  string
	cmd  *exec.Cmd
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := loadenv.FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	return port
}

// RedisServerPath finds redis-server; tests fail (not skip) when it is missing,
// since CI installs it.
func RedisServerPath(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found on PATH (make test installs it): %v", err)
	}
	return p
}

// StartRedis starts a private redis-server on a free loopback port with no
// persistence, extra args appended (for example "--cluster-enabled", "yes").
// It is stopped when the test ends.
func StartRedis(tb testing.TB, extra ...string) *Redis {
	tb.Helper()
	bin := RedisServerPath(tb)
	dir := tb.TempDir()
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port := FreePort(tb)
		args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "", "--appendonly", "no",
			"--dir", dir, "--protected-mode", "no", "--daemonize", "no", "--logfile", ""}
		args = append(args, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start redis-server: %v", err)
		}
		r := &Redis{Addr: fmt.Sprintf("127.0.0.1:%d", port), Port: port, Dir: dir, cmd: cmd}
		if err := loadenv.WaitRedis(r.Addr, 5*time.Second); err != nil {
			lastErr = err
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			continue
		}
		tb.Cleanup(r.Stop)
		return r
	}
	tb.Fatalf("redis-server did not come up: %v", lastErr)
	return nil
}

// Stop kills the server (idempotent). Tests use it to simulate Redis going away.
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_, _ = r.cmd.Process.Wait()
	r.cmd = nil
}

// Restart starts the server again on the same port (after Stop).
func (r *Redis) Restart(tb testing.TB, extra ...string) {
	tb.Helper()
	r.Stop()
	args := []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(r.Port), "--save", "", "--appendonly", "no",
		"--dir", r.Dir, "--protected-mode", "no", "--daemonize", "no", "--logfile", ""}
	args = append(args, extra...)
	cmd := exec.Command(RedisServerPath(tb), args...)
	cmd.Dir = r.Dir
	if err := cmd.Start(); err != nil {
		tb.Fatalf("restart redis-server: %v", err)
	}
	r.cmd = cmd
	if err := loadenv.WaitRedis(r.Addr, 5*time.Second); err != nil {
		tb.Fatalf("redis-server restart: %v", err)
	}
}

// RepoRoot returns the repository root (the directory holding go.mod), so
// tests in any package can find testdata/.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}
