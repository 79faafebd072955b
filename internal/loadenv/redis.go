package loadenv

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Redis is a private redis-server process on a free loopback port, without
// persistence.
type Redis struct {
	Addr string
	cmd  *exec.Cmd
}

// StartRedis starts redis-server (from PATH) with dir as its working
// directory and waits until it answers PING.
func StartRedis(dir string) (*Redis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--save", "",
			"--appendonly", "no", "--dir", dir, "--protected-mode", "no", "--daemonize", "no", "--logfile", "")
		cmd.Dir = dir
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd}
		if lastErr = WaitRedis(r.Addr, 5*time.Second); lastErr == nil {
			return r, nil
		}
		r.Stop()
	}
	return nil, fmt.Errorf("redis-server did not come up: %w", lastErr)
}

// Stop kills the server and reaps it (idempotent).
func (r *Redis) Stop() {
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_, _ = r.cmd.Process.Wait()
	r.cmd = nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitRedis polls addr with a raw PING until redis answers +PONG or wait
// passes (testenv uses it too).
func WaitRedis(addr string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = c.SetDeadline(time.Now().Add(time.Second))
			_, _ = c.Write([]byte("PING\r\n"))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "+PONG") {
				return nil
			}
			err = fmt.Errorf("ping: %q %v", line, rerr)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis at %s: %w", addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
