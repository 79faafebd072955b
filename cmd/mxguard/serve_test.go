package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/quarantine"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// mxguardBinary builds the real binary once per test run.
func mxguardBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mxguard-bin-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "mxguard")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is a running mxguard serve.
type proc struct {
	cmd    *exec.Cmd
	smtp   string
	admin  string
	stderr *syncBuf
	done   chan error
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startServe writes a config (extra YAML appended) and runs the binary.
func startServe(t *testing.T, downstream, extra string) *proc {
	t.Helper()
	dir := t.TempDir()
	p := &proc{
		smtp:   fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		admin:  fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)),
		stderr: &syncBuf{},
		done:   make(chan error, 1),
	}
	cfg := fmt.Sprintf(`hostname: mx.test
listen: [%q]
admin: {listen: %q}
auth: {spf: false, dkim: false, dmarc: false, fcrdns: false}
data: {spool_dir: %q}
domains:
  corp.test: {downstream: [%q], tls: none}
shutdown: {grace: 5s}
`, p.smtp, p.admin, filepath.Join(dir, "spool"), downstream) + extra
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(mxguardBinary(t), "serve", "--config", cfgPath)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", p.stderr.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v\n%s", err, p.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// sendOne runs one transaction and returns the final reply code (0 on a
// broken connection).
func sendOne(addr, msgID string) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	read := func() (int, error) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return 0, err
			}
			if len(line) >= 4 && line[3] == ' ' {
				var code int
				fmt.Sscanf(line[:3], "%d", &code)
				return code, nil
			}
		}
	}
	steps := []struct {
		send string
		want int
	}{
		{"", 220}, {"EHLO client.example.org\r\n", 250}, {"MAIL FROM:<alice@example.org>\r\n", 250},
		{"RCPT TO:<bob@corp.test>\r\n", 250}, {"DATA\r\n", 354},
		{fmt.Sprintf("From: <alice@example.org>\r\nTo: <bob@corp.test>\r\nSubject: crash test\r\nMessage-ID: <%s>\r\n\r\n%s\r\n.\r\n", msgID, strings.Repeat("line of text\r\n", 200)), 250},
	}
	for _, s := range steps {
		if s.send != "" {
			if _, err := io.WriteString(c, s.send); err != nil {
				return 0, err
			}
		}
		code, err := read()
		if err != nil {
			return 0, err
		}
		if code != s.want {
			return code, nil
		}
	}
	return 250, nil
}

// TestCrashLosesNothingAcknowledged kills the gateway with SIGKILL in the
// middle of a stream of messages: every message that got a 250 must be at
// the downstream.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	down := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	p := startServe(t, down.Addr(), "")
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("crash-%d-%d@test", w, i)
				code, err := sendOne(p.smtp, id)
				if err != nil {
					return // the gateway is gone
				}
				if code == 250 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		}(w)
	}
	// Let a stream build up, then kill mid-flight.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 20 {
		t.Fatalf("only %d messages acknowledged before the kill", len(acked))
	}
	have := map[string]bool{}
	for _, m := range down.Messages() {
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if strings.HasPrefix(line, "Message-ID: <") {
				have[strings.TrimSuffix(strings.TrimPrefix(line, "Message-ID: <"), ">")] = true
			}
		}
	}
	for _, id := range acked {
		if !have[id] {
			t.Errorf("acknowledged message %s is not at the downstream", id)
		}
	}
	t.Logf("%d acknowledged, %d at the downstream", len(acked), len(have))
}

// TestCrashQuarantine kills the gateway right after quarantining a stream of
// messages: every acknowledged message is in the store, and no partial item
// is visible.
func TestCrashQuarantine(t *testing.T) {
	down := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	rules := t.TempDir()
	rule := "package mxguard\n\n# METADATA\n# title: Hold everything\n# custom:\n#   code: hold_all\nquarantine contains \"hold_all\" if input.stage == \"data\"\n"
	if err := os.WriteFile(filepath.Join(rules, "hold.rego"), []byte(rule), 0o600); err != nil {
		t.Fatal(err)
	}
	qdir := filepath.Join(t.TempDir(), "q")
	p := startServe(t, down.Addr(), fmt.Sprintf("policy: {rules: %q}\nquarantine: {backend: dir, dir: %q}\n", rules, qdir))
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				id := fmt.Sprintf("q-%d-%d@test", w, i)
				code, err := sendOne(p.smtp, id)
				if err != nil {
					return
				}
				if code == 250 {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		}(w)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 12 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	wg.Wait()
	if down.Delivered() != 0 {
		t.Errorf("quarantined mail reached the downstream")
	}
	store, err := quarantine.OpenDir(qdir, quarantine.DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	items, _, err := store.List(ctx, quarantine.Filter{Limit: quarantine.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	inStore := map[string]bool{}
	for _, it := range items {
		if it.Status == quarantine.StatusDamaged {
			t.Errorf("partial item visible: %+v", it)
			continue
		}
		rc, err := store.Open(ctx, it.ID)
		if err != nil {
			t.Errorf("item %s has no message: %v", it.ID, err)
			continue
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		inStore[strings.TrimSuffix(strings.TrimPrefix(it.MessageID, "<"), ">")] = true
		if !strings.Contains(string(b), "Message-ID: "+it.MessageID) {
			t.Errorf("item %s message does not match its metadata", it.ID)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(acked) == 0 {
		t.Fatal("nothing acknowledged")
	}
	for _, id := range acked {
		if !inStore[id] {
			t.Errorf("acknowledged message %s is not in the quarantine", id)
		}
	}
	t.Logf("%d acknowledged, %d in the store", len(acked), len(items))
}

// TestGracefulShutdown: SIGTERM answers idle sessions 421 and exits 0.
func TestGracefulShutdown(t *testing.T) {
	down := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	p := startServe(t, down.Addr(), "")
	c, err := net.Dial("tcp", p.smtp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if line, _ := r.ReadString('\n'); !strings.HasPrefix(line, "220 ") {
		t.Fatalf("banner %q", line)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, _ := r.ReadString('\n')
	if !strings.HasPrefix(line, "421 4.3.2") {
		t.Errorf("idle session got %q, want 421 4.3.2", line)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
		p.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not exit after SIGTERM")
	}
}

// TestConfigCheckReportsProblems runs `mxguard config check` on a bad file.
func TestConfigCheckReportsProblems(t *testing.T) {
	var out, errb strings.Builder
	code := run([]string{"config", "check", "../../testdata/configs/bad.yaml"}, nil, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "polcy") {
		t.Fatalf("exit %d, stderr %q", code, errb.String())
	}
	code = run([]string{"config", "check", "../../config/example.yaml"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("example.yaml: exit %d\n%s", code, errb.String())
	}
}
