package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/ratelimit"
	"github.com/redis/go-redis/v9"
)

func writeRatelimitConfig(t *testing.T, backend, addr string) string {
	t.Helper()
	cfg := fmt.Sprintf(`hostname: mx1.corp.example
domains:
  corp.example: {downstream: ["127.0.0.1:2525"]}
ratelimit:
  backend: %s
  redis: {addrs: [%q]}
  key_prefix: "cli:"
  limits:
    client_ip: {rate: 5, per: 1h}
    client_net_rcpts: {rate: 100, per: 1h, burst: 50}
    mail_from: {rate: 3, per: 1m}
    mail_from_domain: {rate: 600, per: 1h}
`, backend, addr)
	p := filepath.Join(t.TempDir(), "mxguard.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runRL(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runRatelimit(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRatelimitShowReset(t *testing.T) {
	r := testenv.StartRedis(t)
	cfgPath := writeRatelimitConfig(t, "redis", r.Addr)

	// A gateway has used the buckets.
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	gw := ratelimit.NewRedis(c, ratelimit.RedisOptions{Prefix: "cli:"})
	ctx := context.Background()
	for range 5 {
		_, _ = gw.Allow(ctx, "client_ip:192.0.2.10", ratelimit.Limit{Rate: 5, Per: time.Hour}, 1)
	}
	_, _ = gw.Allow(ctx, "mail_from:alice@example.org", ratelimit.Limit{Rate: 3, Per: time.Minute}, 1)
	lease, _, err := gw.Acquire(ctx, "client_net_concurrent:192.0.2.0/24", 10, time.Minute)
	if err != nil || lease == nil {
		t.Fatal(err)
	}

	code, out, errs := runRL("show", "--ip", "::ffff:192.0.2.10", "--config", cfgPath)
	if code != 0 {
		t.Fatalf("show --ip: %d %s", code, errs)
	}
	for _, want := range []string{
		"client_ip:192.0.2.10 ", "client_net_rcpts:192.0.2.0/24", "client_net_concurrent:192.0.2.0/24", "1 live connections",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("show --ip output lacks %q:\n%s", want, out)
		}
	}
	if !regexpLine(out, "client_ip:192.0.2.10", "5", "0") {
		t.Errorf("client_ip bucket not shown as used up:\n%s", out)
	}

	code, out, _ = runRL("show", "--sender", "Alice@Example.ORG", "--config", cfgPath)
	if code != 0 || !regexpLine(out, "mail_from:alice@example.org", "3", "2") || !strings.Contains(out, "mail_from_domain:example.org") {
		t.Errorf("show --sender: %d\n%s", code, out)
	}

	code, out, errs = runRL("reset", "--ip", "192.0.2.10", "--config", cfgPath)
	if code != 0 || !strings.Contains(out, "reset client_ip:192.0.2.10") {
		t.Fatalf("reset: %d %s %s", code, out, errs)
	}
	_, out, _ = runRL("show", "--key", "client_ip:192.0.2.10", "--config", cfgPath)
	if !regexpLine(out, "client_ip:192.0.2.10", "5", "5") {
		t.Errorf("after reset:\n%s", out)
	}
	_, out, _ = runRL("show", "--key", "helo:mx.example", "--config", cfgPath)
	if !strings.Contains(out, "no limit configured for helo") {
		t.Errorf("unconfigured key:\n%s", out)
	}
}

// regexpLine reports whether out has a line starting with key whose next
// fields are limit and remaining.
func regexpLine(out, key, limit, remaining string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == key && f[1] == limit && f[2] == remaining {
			return true
		}
	}
	return false
}

func TestRatelimitMemoryBackendAndUsage(t *testing.T) {
	cfgPath := writeRatelimitConfig(t, "memory", "127.0.0.1:6379")
	code, _, errs := runRL("show", "--ip", "192.0.2.1", "--config", cfgPath)
	if code != 1 || !strings.Contains(errs, "inside the running mxguard process") {
		t.Errorf("memory backend: %d %s", code, errs)
	}
	for _, args := range [][]string{
		nil,
		{"frob"},
		{"show"},
		{"show", "--ip", "1.2.3.4", "--sender", "a@b"},
		{"reset", "--key", "nodimension", "--config", cfgPath},
		{"show", "--ip", "not-an-ip", "--config", cfgPath},
	} {
		if code, _, _ := runRL(args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
}
